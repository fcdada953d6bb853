"""Feature selectors (VarianceThreshold, SelectKBest, SelectPercentile, SelectFpr/Fdr/Fwe,
GenericUnivariateSelect, SelectFromModel, RFE, RFECV, SequentialFeatureSelector):
the columns of ``get_support()``, gathered. No arithmetic: bit for bit, NaN included."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_selection import (
    RFE,
    RFECV,
    GenericUnivariateSelect,
    SelectFdr,
    SelectFpr,
    SelectFromModel,
    SelectFwe,
    SelectKBest,
    SelectPercentile,
    SequentialFeatureSelector,
    VarianceThreshold,
)

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.registry import register


@register(VarianceThreshold, SelectKBest, SelectPercentile, SelectFpr, SelectFdr, SelectFwe,
          GenericUnivariateSelect, SelectFromModel, RFE, RFECV, SequentialFeatureSelector)
def convert_selector(graph: Graph, selector: Any, x: Tensor) -> Tensor:
    kept = np.asarray(selector.get_support(indices=True), dtype=np.int64)
    if len(kept) == 0:
        raise ExportError(f"{type(selector).__name__} selects no feature; loosen its threshold")
    if len(kept) == x.width and np.array_equal(kept, np.arange(x.width)):
        return x
    out = graph.op("Gather", [x.name, graph.const(kept, "selected")], axis=1)
    nan = None if x.nan is None else tuple(x.nan[i] for i in kept)
    return Tensor(out, len(kept), x.dtype, nan=nan)  # type: ignore[arg-type]
