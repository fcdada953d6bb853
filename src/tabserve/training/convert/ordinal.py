"""Encoders that look a value up per category: OrdinalEncoder and TargetEncoder.

Each input column is compared with its ``categories_`` (``Equal``; NaN, a category when it was seen in
fit, by ``IsNaN``), and the 0/1 matches pick a row of a table: a matrix product in which one term is the
value and the others are 0, so exact. Values that are not finite (OrdinalEncoder's NaN for a missing
value) and unknown values are put in with ``Where``.

- OrdinalEncoder: the table is what the fitted encoder's own ``transform`` gives for each category
  (infrequent grouping and ``encoded_missing_value`` included); an unknown value is ``unknown_value``
  with ``handle_unknown='use_encoded_value'``, NaN with ``'error'`` (scikit-learn refuses it; the
  server refuses unknown text categories when the manifest says so).
- TargetEncoder: ``encodings_`` per feature (and per class when multiclass, feature-major as
  scikit-learn), unknown values ``target_mean_``. This is ``transform``, which serving uses;
  ``fit_transform``'s cross-fitted values are for training only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from onnx import TensorProto
from sklearn.preprocessing import OrdinalEncoder, TargetEncoder

from tabserve.errors import ExportError
from tabserve.training.convert.encoders import text_categories
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.registry import register


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def lookup(graph: Graph, x: Tensor, feature: int, categories: np.ndarray, table: np.ndarray,
           unknown: np.ndarray, who: str) -> str:
    """``[N, k]``: row ``table[c]`` where column ``feature`` holds category ``c``, else ``unknown``."""
    column = graph.op("Gather", [x.name, graph.const(np.array([feature], dtype=np.int64), "column")], axis=1)
    cats = list(categories.tolist())
    nan_at = [i for i, c in enumerate(cats) if _is_nan(c) or c is None]
    plain = [i for i in range(len(cats)) if i not in nan_at]
    if x.dtype == "str":  # a missing category is the string input's missing value (encoders.text_categories)
        plain = list(range(len(cats)))
        constant = graph.const(np.array(text_categories(cats, who, feature), dtype=object), "categories")
    else:
        try:
            constant = graph.const(np.array([cats[i] for i in plain], dtype=np.float64), "categories")
        except (TypeError, ValueError):
            raise ExportError(f"{who} column {feature} gets numbers but its categories are {cats[:5]!r}") from None
    matches = [graph.op("Equal", [column, constant])]
    order = list(plain)
    if nan_at and x.dtype != "str":
        matches.append(graph.op("IsNaN", [column]))
        order.append(nan_at[0])
    hits = matches[0] if len(matches) == 1 else graph.op("Concat", matches, axis=1)
    rows = np.asarray(table, dtype=np.float64)[order]  # [m, k] in the order of the matches
    finite = np.isfinite(rows).all(axis=1)
    out = graph.op("MatMul", [graph.cast(hits, TensorProto.DOUBLE),  # type: ignore[arg-type]
                              graph.const(np.where(finite[:, None], rows, 0.0), "table")])
    axis = graph.const(np.array([1], dtype=np.int64), "axis")
    seen = graph.op("ReduceMax", [graph.cast(hits, TensorProto.INT64), axis], keepdims=1)  # type: ignore
    out = graph.op("Where", [graph.cast(seen, TensorProto.BOOL), out,  # type: ignore[arg-type]
                             graph.const(np.asarray(unknown, dtype=np.float64).reshape(1, -1), "unknown")])
    for j in np.flatnonzero(~finite):  # e.g. NaN for a missing value: 0 * NaN would spoil every row
        hit = graph.op("Gather", [hits, graph.const(np.array([j], dtype=np.int64), "category")], axis=1)
        out = graph.op("Where", [hit, graph.const(rows[j].reshape(1, -1), "value"), out])
    return out  # type: ignore[return-value]


def _own_codes(encoder: OrdinalEncoder, feature: int) -> np.ndarray:
    """What ``encoder.transform`` gives for each of column ``feature``'s categories."""
    cats = encoder.categories_
    columns = {}
    for j, c in enumerate(cats):
        values = list(c) if j == feature else [c[0]] * len(cats[feature])
        columns[j] = pd.Series(values, dtype=object if c.dtype == object else np.float64)
    frame = pd.DataFrame(columns)
    names = getattr(encoder, "feature_names_in_", None)
    probe: Any = frame.set_axis(list(names), axis=1) if names is not None else frame.to_numpy()
    return np.asarray(encoder.transform(probe), dtype=np.float64)[:, feature]


def _concat(graph: Graph, parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else graph.op("Concat", parts, axis=1)  # type: ignore[return-value]


@register(OrdinalEncoder)
def convert_ordinal_encoder(graph: Graph, encoder: OrdinalEncoder, x: Tensor) -> Tensor:
    unknown = float(encoder.unknown_value) if encoder.handle_unknown == "use_encoded_value" else np.nan
    parts = [lookup(graph, x, i, cats, _own_codes(encoder, i).reshape(-1, 1), np.array([unknown]),
                    "OrdinalEncoder") for i, cats in enumerate(encoder.categories_)]
    return Tensor(_concat(graph, parts), len(parts), nan=None)


@register(TargetEncoder)
def convert_target_encoder(graph: Graph, encoder: TargetEncoder, x: Tensor) -> Tensor:
    k = len(encoder.classes_) if encoder.target_type_ == "multiclass" else 1
    means = np.asarray(encoder.target_mean_, dtype=np.float64).reshape(-1)
    parts = []
    for i, cats in enumerate(encoder.categories_):
        table = np.stack([np.asarray(encoder.encodings_[i * k + c], dtype=np.float64) for c in range(k)], axis=1)
        parts.append(lookup(graph, x, i, cats, table, means if k > 1 else means[:1], "TargetEncoder"))
    width = len(parts) * k
    return Tensor(_concat(graph, parts), width, nan=(False,) * width)
