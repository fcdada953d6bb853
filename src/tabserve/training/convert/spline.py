"""SplineTransformer: each feature's B-spline basis, evaluated as scipy's ``BSpline`` does, operation for
operation.

scipy finds the knot interval ``ell`` (the last ``t[ell] <= x``, kept within ``[k, n - 1]``), runs de
Boor's recursion (``h[n - 1] += w * (t[ell + n] - x)``, ``h[n] = w * (x - t[ell + n - j])``,
``w = hh[n - 1] / (t[ell + n] - t[ell + n - j])``, 0 where the two knots are equal) and adds
``c[ell - k + a, j] * h[a]`` over ``a`` in order. The graph gathers the same knots and coefficient rows per
value and rounds the same operations in the same order: bit for bit. Then scikit-learn's extrapolation:
``continue`` (the end intervals' polynomials), ``error`` (NaN, where scikit-learn refuses the row),
``periodic`` (``x`` wrapped into the base period with numpy's float ``%``, twice, as scikit-learn then
``BSpline`` do), ``constant`` and ``linear`` (the end values, and the end slopes times ``x - xmin``, as
scikit-learn computes them once at fit, on the first or last ``degree`` columns). NaN rows give zeros
(``handle_missing='zeros'``); ``include_bias=False`` drops each feature's last column.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.preprocessing import SplineTransformer

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register

_I64 = np.int64


def _mod(graph: Graph, a: str, period: float) -> str:
    """numpy's float ``a % period`` for ``period > 0``: ``fmod``, plus ``period`` where it is negative, +0."""
    c = graph.const
    p = c(np.float64(period), "period")
    m = graph.op("Mod", [a, p], fmod=1)
    zero = c(np.float64(0.0), "zero")
    m = graph.op("Where", [graph.op("Less", [m, zero]), graph.op("Add", [m, p]), m])
    return graph.op("Where", [graph.op("Equal", [m, zero]), zero, m])  # type: ignore[return-value]


def _wrap(graph: Graph, x: str, t: np.ndarray, k: int, n: int) -> str:
    start = graph.const(np.float64(t[k]), "t_k")
    return graph.op("Add", [start, _mod(graph, graph.op("Sub", [x, start]), float(t[n] - t[k]))])  # type: ignore


def _basis(graph: Graph, x: str, t: np.ndarray, k: int, coef: np.ndarray, extrapolate: bool) -> str:
    """``BSpline(t, coef, k)(x)`` for ``x`` ``[N, 1]``: ``[N, coef.shape[1]]``."""
    c = graph.const
    n = len(t) - k - 1
    inner = t[k + 1:n]
    if len(inner):
        counted = graph.cast(graph.op("LessOrEqual", [c(inner, "knots"), x]), TensorProto.INT64)  # type: ignore
        ell = graph.op("Add", [graph.op("ReduceSum", [counted, c(np.array([1], dtype=_I64), "axis")], keepdims=1),
                               c(_I64(k), "k")])
    else:
        ell = graph.op("Add", [graph.op("Cast", [graph.op("Mul", [x, c(np.float64(0.0), "zero")])],
                                        to=TensorProto.INT64), c(_I64(k), "k")])  # [N, 1] of k
    knots = c(t, "t")

    def knot(offset: int) -> str:
        return graph.op("Gather", [knots, graph.op("Add", [ell, c(_I64(offset), "offset")])],  # type: ignore
                        axis=0)

    zero, one = c(np.float64(0.0), "zero"), c(np.float64(1.0), "one")
    h: list[str] = [graph.op("Add", [graph.op("Mul", [x, zero]), one])]  # type: ignore[list-item]  # 1 (NaN: NaN)
    for j in range(1, k + 1):
        hh = h[:j]
        h = [zero, *h[1:j], zero]
        for m in range(1, j + 1):
            xb, xa = knot(m), knot(m - j)
            same = graph.op("Equal", [xb, xa])
            w = graph.op("Div", [hh[m - 1], graph.op("Sub", [xb, xa])])
            grown = graph.op("Add", [h[m - 1], graph.op("Mul", [w, graph.op("Sub", [xb, x])])])
            h[m - 1] = graph.op("Where", [same, h[m - 1], grown])  # type: ignore[assignment]
            h[m] = graph.op("Where", [same, zero, graph.op("Mul", [w, graph.op("Sub", [x, xa])])])  # type: ignore
    rows = graph.op("Squeeze", [graph.op("Sub", [ell, c(_I64(k), "k")]), c(np.array([1], dtype=_I64), "axis")])
    table = c(np.asarray(coef, dtype=np.float64), "coefficients")
    out = zero
    for a in range(k + 1):
        picked = graph.op("Gather", [table, graph.op("Add", [rows, c(_I64(a), "a")])], axis=0)  # [N, S]
        out = graph.op("Add", [out, graph.op("Mul", [picked, h[a]])])  # type: ignore[assignment]
    if not extrapolate:
        outside = graph.op("Or", [graph.op("Less", [x, c(np.float64(t[k]), "t_start")]),
                                  graph.op("Greater", [x, c(np.float64(t[n]), "t_end")])])
        out = graph.op("Where", [outside, c(np.float64(np.nan), "nan"), out])  # type: ignore[assignment]
    return out


def _feature(graph: Graph, spline: SplineTransformer, spl: Any, x: str, degree: int) -> str:
    t, k = np.asarray(spl.t, dtype=np.float64), int(spl.k)
    n, width = len(t) - k - 1, spl.c.shape[1]
    c = graph.const
    mode = spline.extrapolation
    if mode in ("continue", "error", "periodic"):
        if mode == "periodic":
            if not t[n] - t[k] > 0:
                raise ExportError("SplineTransformer(extrapolation='periodic') fitted on a feature whose knots "
                                  "span no period: scikit-learn answers NaN for it")
            x = _wrap(graph, x, t, k, n)
        if spl.extrapolate == "periodic":
            x = _wrap(graph, x, t, k, n)
        return _basis(graph, x, t, k, spl.c, spl.extrapolate is True)
    xmin, xmax = t[degree], t[-degree - 1]
    inside = graph.op("And", [graph.op("LessOrEqual", [c(np.float64(xmin), "xmin"), x]),
                              graph.op("LessOrEqual", [x, c(np.float64(xmax), "xmax")])])
    out = graph.op("Where", [inside, _basis(graph, x, t, k, spl.c, bool(spl.extrapolate)), c(np.zeros(width), "zeros")])
    below = graph.op("Less", [x, c(np.float64(xmin), "xmin")])
    above = graph.op("Greater", [x, c(np.float64(xmax), "xmax")])
    f_min, f_max = spl(xmin), spl(xmax)
    low, high = np.zeros(width, bool), np.zeros(width, bool)
    if mode == "constant":
        if degree == 0:
            return out  # type: ignore[return-value]
        low[:degree], high[width - degree:] = True, True
        below_values, above_values = c(f_min, "f_min"), c(f_max, "f_max")
    elif mode == "linear":  # ``degree`` is the value scikit-learn's loop holds for this feature
        fp_min, fp_max = spl(xmin, nu=1), spl(xmax, nu=1)
        reach = _linear_degree(degree)
        low[:reach], high[width - reach:] = True, True
        below_values = graph.op("Add", [c(f_min, "f_min"), graph.op("Mul", [
            graph.op("Sub", [x, c(np.float64(xmin), "xmin")]), c(fp_min, "fp_min")])])
        above_values = graph.op("Add", [c(f_max, "f_max"), graph.op("Mul", [
            graph.op("Sub", [x, c(np.float64(xmax), "xmax")]), c(fp_max, "fp_max")])])
    else:
        raise ExportError(f"SplineTransformer(extrapolation={mode!r}) is not exported")
    out = graph.op("Where", [graph.op("And", [below, c(low, "low_columns")]), below_values, out])
    return graph.op("Where", [graph.op("And", [above, c(high, "high_columns")]), above_values, out])  # type: ignore


def _linear_degree(degree: int) -> int:
    """scikit-learn's linear extrapolation raises a degree of 0 or 1 by one, in the variable its loop over
    the features shares: the next feature starts from the raised value (its ``xmin``, ``xmax`` and
    columns too). Reproduced as it is, since its predictions are the reference."""
    return degree + 1 if degree <= 1 else degree


@register(SplineTransformer)
def convert_spline_transformer(graph: Graph, spline: SplineTransformer, x: Tensor) -> Tensor:
    x = numeric(x, spline)
    c = graph.const
    blocks, degree = [], spline.degree
    for f, spl in enumerate(spline.bsplines_):
        column = graph.op("Gather", [x.name, c(np.array([f], dtype=_I64), "column")], axis=1)
        values = _feature(graph, spline, spl, column, degree)  # type: ignore[arg-type]
        if spline.extrapolation == "linear":
            degree = _linear_degree(degree)
        width = spl.c.shape[1]
        values = graph.op("Where", [graph.op("IsNaN", [column]), c(np.zeros(width), "zeros"), values])
        if not spline.include_bias:
            values = graph.op("Gather", [values, c(np.arange(width - 1, dtype=_I64), "kept")], axis=1)
        blocks.append(values)
    out = blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, axis=1)
    return Tensor(out, spline.n_features_out_, nan=(False,) * spline.n_features_out_)  # type: ignore[arg-type]
