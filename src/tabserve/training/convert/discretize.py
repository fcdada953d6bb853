"""KBinsDiscretizer (every strategy; ordinal, onehot and onehot-dense encodings): bin numbers by comparison.

scikit-learn bins a value with ``np.searchsorted(bin_edges_[j][1:-1], x, side="right")``: the number of
inner edges ``<= x``. The graph counts them the same way (``x >= edge``, summed: whole numbers, exact),
all features at once with the edge lists padded by NaN (never ``<= x``). The strategy only decides the
edges, which are read from the fitted object. With ``dtype=np.float32`` scikit-learn rounds ``x`` to
float32 first; so does the graph. The one-hot encodings are the fitted inner OneHotEncoder's converter
on the bin numbers. The edges are where the output changes: the adversarial rows probe them
(``adversarial.invert``).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from sklearn.preprocessing import KBinsDiscretizer

from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import convert, register


def inner_edges(discretizer: KBinsDiscretizer) -> list[np.ndarray]:
    return [np.asarray(edges, dtype=np.float64)[1:-1] for edges in discretizer.bin_edges_]


@register(KBinsDiscretizer)
def convert_kbins_discretizer(graph: Graph, discretizer: KBinsDiscretizer, x: Tensor) -> Tensor:
    x = numeric(x, discretizer)
    edges = inner_edges(discretizer)
    table = np.full((x.width, max(1, max(len(e) for e in edges))), np.nan)
    for j, e in enumerate(edges):
        table[j, :len(e)] = e
    values = x.name
    if discretizer.dtype == np.float32:
        values = graph.cast(graph.cast(values, TensorProto.FLOAT), TensorProto.DOUBLE)
    column = graph.op("Unsqueeze", [values, graph.const(np.array([2], dtype=np.int64), "axis")])  # [N, F, 1]
    above = graph.cast(graph.op("GreaterOrEqual", [column, graph.const(table, "bin_edges")]),  # type: ignore
                       TensorProto.DOUBLE)
    codes = graph.op("ReduceSum", [above, graph.const(np.array([2], dtype=np.int64), "axis")], keepdims=0)
    binned = Tensor(codes, x.width, nan=(False,) * x.width)  # type: ignore[arg-type]
    if discretizer.encode == "ordinal":
        return binned
    return convert(graph, discretizer._encoder, binned)  # type: ignore[no-any-return]


def edge_probes(discretizer: KBinsDiscretizer, columns: list[int]) -> dict[int, np.ndarray]:
    """The input values where the bins of output ``columns`` change: each inner edge and the doubles next
    to it, per input feature (a one-hot encoding has ``n_bins_[j]`` columns for feature ``j``)."""
    widths = np.asarray(discretizer.n_bins_, dtype=np.int64)
    feature_of = (np.arange(len(widths)) if discretizer.encode == "ordinal"
                  else np.repeat(np.arange(len(widths)), widths))
    edges = inner_edges(discretizer)
    out = {}
    for f in sorted({int(feature_of[c]) for c in columns if 0 <= c < len(feature_of)}):
        e = edges[f]
        if len(e):
            out[f] = np.unique(np.concatenate([e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf)]))
    return out
