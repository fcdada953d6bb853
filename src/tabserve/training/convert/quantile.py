"""QuantileTransformer with ``output_distribution='uniform'``: numpy's ``interp``, step for step.

scikit-learn maps a value to ``0.5 * (interp(x, q, r) - interp(-x, -q[::-1], -r[::-1]))`` (``q`` the
column's ``quantiles_``, ``r`` the ``references_``; the two directions average out repeated quantiles),
then 1 where ``x`` equals the last quantile and 0 where it equals the first. numpy's ``interp`` takes
``j``, the last index with ``xp[j] <= x``; below the first point ``fp[0]``, from the last on ``fp[-1]``,
``fp[j]`` where ``x == xp[j]``, else ``slope[j] * (x - xp[j]) + fp[j]`` with
``slope[j] = (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])``. The graph counts ``j`` by comparisons, gathers
``xp[j]``, ``fp[j]`` and the slope (computed here as numpy does) and rounds the same two operations:
bit for bit. ``output_distribution='normal'`` needs the normal quantile function (scipy's ``ndtri``),
which no ONNX operator computes: refused.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from sklearn.preprocessing import QuantileTransformer

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register


def _interp(graph: Graph, x: str, xp: np.ndarray, fp: np.ndarray) -> str:
    """``np.interp`` per column: ``xp`` and ``fp`` are ``[F, n]`` (one row of points per column of ``x``)."""
    c = graph.const
    features, n = xp.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.zeros_like(xp)
        slopes[:, :-1] = (fp[:, 1:] - fp[:, :-1]) / (xp[:, 1:] - xp[:, :-1])
    column = graph.op("Unsqueeze", [x, c(np.array([2], dtype=np.int64), "axis")])  # [N, F, 1]
    at_or_below = graph.cast(graph.op("LessOrEqual", [c(xp, "xp"), column]), TensorProto.INT64)  # type: ignore
    count = graph.op("ReduceSum", [at_or_below, c(np.array([2], dtype=np.int64), "axis")], keepdims=0)
    j = graph.op("Sub", [count, c(np.int64(1), "one")])  # [N, F], -1 below the first point
    inner = graph.op("Max", [graph.op("Min", [j, c(np.int64(n - 2), "last_segment")]), c(np.int64(0), "zero")])
    flat = graph.op("Add", [inner, c(np.arange(features, dtype=np.int64) * n, "row_starts")])
    xj, fj, slope = (graph.op("Gather", [c(t.reshape(-1), name), flat], axis=0)
                     for t, name in ((xp, "xp_flat"), (fp, "fp_flat"), (slopes, "slopes")))
    value = graph.op("Add", [graph.op("Mul", [slope, graph.op("Sub", [x, xj])]), fj])
    value = graph.op("Where", [graph.op("Equal", [x, xj]), fj, value])
    below = graph.op("Less", [j, c(np.int64(0), "zero")])
    from_last = graph.op("GreaterOrEqual", [j, c(np.int64(n - 1), "last")])
    value = graph.op("Where", [below, c(fp[:, 0], "fp_first"), value])
    return graph.op("Where", [from_last, c(fp[:, -1], "fp_last"), value])  # type: ignore[return-value]


@register(QuantileTransformer)
def convert_quantile_transformer(graph: Graph, transformer: QuantileTransformer, x: Tensor) -> Tensor:
    if transformer.output_distribution != "uniform":
        raise ExportError("QuantileTransformer(output_distribution='normal') needs the normal quantile "
                          "function, which ONNX cannot compute exactly; use output_distribution='uniform' "
                          "(or a PowerTransformer)")
    x = numeric(x, transformer)
    q = np.asarray(transformer.quantiles_, dtype=np.float64).T  # [F, n]
    r = np.broadcast_to(np.asarray(transformer.references_, dtype=np.float64), q.shape)
    c = graph.const
    forward = _interp(graph, x.name, q, r)
    backward = _interp(graph, graph.op("Neg", [x.name]), -q[:, ::-1], -r[:, ::-1])  # type: ignore[arg-type]
    out = graph.op("Mul", [c(np.float64(0.5), "half"), graph.op("Sub", [forward, backward])])
    out = graph.op("Where", [graph.op("Equal", [x.name, c(q[:, -1], "upper")]), c(np.float64(1.0), "one"), out])
    out = graph.op("Where", [graph.op("Equal", [x.name, c(q[:, 0], "lower")]), c(np.float64(0.0), "zero"), out])
    out = graph.op("Where", [graph.op("IsNaN", [x.name]), x.name, out])
    return Tensor(out, x.width, nan=x.nan)  # type: ignore[arg-type]
