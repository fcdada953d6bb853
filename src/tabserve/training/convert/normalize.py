"""Normalizer: each row divided by its norm, as ``sklearn.preprocessing.normalize`` on a dense array.

``l1``: ``sum(|x|)``; ``l2``: ``sqrt(sum(x * x))`` (sklearn's ``row_norms``, an ``einsum``); ``max``:
``max(|x|)``. A norm below ``10 * eps`` counts as 1 (``_handle_zeros_in_scale``), so a zero row stays
zero. ``max`` is exact; the sums are added in another order than numpy's (onnxruntime's
``ReduceL1``/``ReduceSumSquare``), a few ulps of the norm: measured 4.4e-16 relative on the outputs.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import Normalizer

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register

_AXIS_1 = np.array([1], dtype=np.int64)
_NORMS = {"l1": "ReduceL1", "max": "ReduceMax"}


@register(Normalizer)
def convert_normalizer(graph: Graph, normalizer: Normalizer, x: Tensor) -> Tensor:
    x = numeric(x, normalizer)
    axes = graph.const(_AXIS_1, "axes")
    if normalizer.norm == "l2":
        norms = graph.op("Sqrt", [graph.op("ReduceSumSquare", [x.name, axes], keepdims=1)])
    elif normalizer.norm in _NORMS:
        source = x.name if normalizer.norm == "l1" else graph.op("Abs", [x.name])
        norms = graph.op(_NORMS[normalizer.norm], [source, axes], keepdims=1)
    else:
        raise ExportError(f"Normalizer(norm={normalizer.norm!r}): only 'l1', 'l2' and 'max' are exported")
    small = graph.op("Less", [norms, graph.const(np.float64(10 * np.finfo(np.float64).eps), "eps10")])
    norms = graph.op("Where", [small, graph.const(np.float64(1.0), "one"), norms])
    return Tensor(graph.op("Div", [x.name, norms]), x.width, nan=None)  # type: ignore[arg-type]
