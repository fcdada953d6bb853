"""Inverse links, op for op as scikit-learn, LightGBM (double) and XGBoost (float32) compute them.

``expit``: scipy's ``1 / (1 + exp(-x))`` (LightGBM's ``1.0 / (1.0 + exp(-sigmoid * x))``);
``softmax``: subtract the row maximum, exp, add up in class order, divide (sklearn's
``utils.extmath.softmax``, LightGBM's ``Common::Softmax``). onnxruntime's double ``Exp`` is within an
ulp of glibc's (and numpy's) ``exp`` but not always equal, so these agree to about 1e-16 relative.
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
    return graph.op("Div", [one, graph.op("Add", [one, e])])  # type: ignore[return-value]


def binary_probabilities(graph: Graph, p1: str, dtype: type = np.float64) -> str:
    """``[N]`` probability of the positive class -> ``[N, 2]`` as ``[1 - p, p]`` (computed in ``dtype``)."""
    column = graph.op("Unsqueeze", [p1, graph.const(np.array([1], dtype=np.int64), "axes")])
    p0 = graph.op("Sub", [graph.const(np.array(1.0, dtype=dtype), "one"), column])
    return graph.op("Concat", [p0, column], axis=1)  # type: ignore[return-value]


def softmax(graph: Graph, raw: str) -> str:
    """``[N, K]`` -> ``[N, K]``."""
    top = graph.op("ReduceMax", [raw, graph.const(np.array([1], dtype=np.int64), "axes")], keepdims=1)
    e = graph.op("Exp", [graph.op("Sub", [raw, top])])
    axes = graph.const(np.array([1], dtype=np.int64), "axes")
    total = graph.op("Unsqueeze", [sequential_sum(graph, e, axis=1), axes])
    return graph.op("Div", [e, total])  # type: ignore[return-value]


def positive_when(graph: Graph, condition: str) -> str:
    """A binary ``decision`` for the tail (label = classes[1] where > 0) from a boolean ``[N]``."""
    plus, minus = graph.const(np.array(1.0)), graph.const(np.array(-1.0))
    return graph.op("Where", [condition, plus, minus])  # type: ignore[return-value]


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
    total = sequential_sum(graph, graph.cast(e, TensorProto.DOUBLE), axis=1)
    axes = graph.const(np.array([1], dtype=np.int64), "axes")
    total = graph.op("Unsqueeze", [graph.cast(total, TensorProto.FLOAT), axes])
    return graph.op("Div", [e, total])  # type: ignore[return-value]


__all__ = ["binary_probabilities", "expit", "float32_sigmoid", "float32_softmax", "positive_when", "softmax"]
