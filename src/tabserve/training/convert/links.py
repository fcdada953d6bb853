"""Inverse links, op for op as scikit-learn, LightGBM (double) and XGBoost (float32) compute them.

``expit``: scipy's ``1 / (1 + exp(-x))`` (LightGBM's ``1.0 / (1.0 + exp(-sigmoid * x))``);
``softmax``: onnxruntime's ``Softmax`` (sklearn's ``utils.extmath.softmax`` and LightGBM's
``Common::Softmax`` subtract the row maximum, exp, add up, divide). onnxruntime's double ``Exp`` is
within an ulp of glibc's (and numpy's) ``exp`` but not always equal, so these agree to about 1e-16
relative. (onnxruntime's double ``Sigmoid`` is not used: it is off by up to 100% where it underflows.)
The class-0 probability ``1 - p`` inherits ``p``'s absolute error: when ``1 + exp(-x)`` rounds the
other way (an ulp of ``p``), ``1 - p`` is off by ``1.1e-16 / (1 - p)`` relative, measured up to 1e-14;
it exceeds 1e-9 only for ``1 - p`` below about 1e-7, where such a rounding flip has a probability of
about ``1 - p`` per row.

XGBoost works in float32 with glibc's ``expf`` (reproduced by ``expf.expf``): its sigmoid is
``1 / (expf(min(-x, 88.7)) + 1 + 1e-16)`` and its softmax divides each ``expf(x - max)`` by the float of
their double sum (``common::Sigmoid``, ``common::Softmax``).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from tabserve.training.convert.expf import expf
from tabserve.training.convert.graph import Graph
from tabserve.training.convert.trees import sequential_sum


def expit(graph: Graph, x: str) -> str:
    one = graph.const(np.array(1.0), "one")
    e = graph.op("Exp", [graph.op("Neg", [x])])
    return graph.op("Reciprocal", [graph.op("Add", [one, e])])  # type: ignore[return-value]  # 1 / x, exactly


def binary_from_negated(graph: Graph, pair: str, scale: float = 1.0) -> str:
    """``[N, 2]`` holding ``[-raw, 0]`` -> the probabilities ``[1 - p, p]``, ``p = expit(scale * raw)``
    (scipy's ``1 / (1 + exp(-x))``, LightGBM's ``1 / (1 + exp(-sigmoid * raw))``), in two nodes.

    The ensemble gives ``-raw`` exactly (its leaves negated), so no ``Neg``; ``-scale * raw`` is
    ``scale * (-raw)`` bit for bit. ``Softmax`` of ``[-x, 0]`` is ``[., 1 / (exp(-x) + 1)]`` where
    ``x > 0`` (the row maximum is the 0), scipy's ``expit`` op for op; where ``x <= 0`` it is
    ``exp(x) / (1 + exp(x))``, the same value within an ulp or two. Its first column is more accurate
    than the model's ``1 - p``, so one ``Gemm`` by ``[[0, 0], [-1, 1]]`` plus ``[1, 0]`` replaces it with
    ``-p + 1`` (each product exact, one rounding), which rounds as numpy's ``1 - p`` does. Measured: the
    two nodes cost about 0.4 us less per row than ``Exp``, ``Add``, ``Reciprocal`` and ``MatMul``."""
    c = graph.const
    if scale != 1.0:
        pair = graph.op("Mul", [pair, c(np.array([scale, 1.0]), "sigmoid")])  # type: ignore[assignment]
    both = graph.op("Softmax", [pair], axis=1)
    complement = c(np.array([[0.0, 0.0], [-1.0, 1.0]]), "complement")
    return graph.op("Gemm", [both, complement, c(np.array([1.0, 0.0]), "one")])  # type: ignore[return-value]


def binary_probabilities(graph: Graph, p1: str, dtype: type = np.float64) -> str:
    """``[N, 1]`` probability of the positive class -> ``[N, 2]`` as ``[1 - p, p]`` (computed in ``dtype``):
    ``|[1, 0] - p|``, where ``|0 - p|`` is ``p`` for a probability."""
    pair = graph.op("Sub", [graph.const(np.array([1.0, 0.0], dtype=dtype), "complement"), p1])
    return graph.op("Abs", [pair])  # type: ignore[return-value]


def sign_decision(graph: Graph, d: str) -> str:
    """``[N, 1]`` -> ``[N, 2]`` ``[0, d]`` (``0 * d``, a signed zero): its argmax is 1 where ``d > 0``
    (the first of equal maxima), or where ``d >= 0`` with ties="last"."""
    return graph.op("Mul", [d, graph.const(np.array([0.0, 1.0]), "sign")])  # type: ignore[return-value]


def softmax(graph: Graph, raw: str) -> str:
    """``[N, K]`` -> ``[N, K]``: onnxruntime's double ``Softmax`` (subtract the row maximum, exp, sum,
    divide, as sklearn's ``utils.extmath.softmax`` and LightGBM): within 5e-16 relative of theirs
    (measured on 600,000 rows, subnormal results included), zeros where theirs are zero."""
    return graph.op("Softmax", [raw], axis=1)  # type: ignore[return-value]


def float32_sigmoid(graph: Graph, x: str) -> str:
    """XGBoost's ``common::Sigmoid`` on float32 ``x``."""
    c = graph.const
    clamped = graph.op("Min", [graph.op("Neg", [x]), c(np.array(88.7, dtype=np.float32))])
    e = expf(graph, clamped)  # type: ignore[arg-type]
    denominator = graph.op("Add", [graph.op("Add", [e, c(np.array(1.0, dtype=np.float32))]),
                                   c(np.array(1e-16, dtype=np.float32))])
    return graph.op("Div", [c(np.array(1.0, dtype=np.float32)), denominator])  # type: ignore[return-value]


def float32_softmax(graph: Graph, raw: str) -> str:
    """XGBoost's ``common::Softmax`` on float32 ``[N, K]``."""
    top = graph.op("ReduceMax", [raw, graph.const(np.array([1], dtype=np.int64), "axes")], keepdims=1)
    e = expf(graph, graph.op("Sub", [raw, top]))  # type: ignore[arg-type]
    total = sequential_sum(graph, graph.cast(e, TensorProto.DOUBLE), axis=1, keepdims=True)
    return graph.op("Div", [e, graph.cast(total, TensorProto.FLOAT)])  # type: ignore[return-value]


__all__ = ["binary_from_negated", "binary_probabilities", "expit", "float32_sigmoid", "float32_softmax",
           "sign_decision", "softmax"]
