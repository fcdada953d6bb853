"""OneHotEncoder: each input column compared with its categories, as 0/1 doubles in scikit-learn's order.

A string (or number) column is compared with the constant vector of its ``categories_`` (``Equal``),
giving one 0/1 column per category. ``drop`` removes a column; infrequent categories (``min_frequency``,
``max_categories``) are summed into one column at the end of the feature's block; an unknown value is
all zeros, or counts as infrequent with ``handle_unknown='infrequent_if_exist'`` (and ``'warn'`` from
scikit-learn 1.8 on). Grouping is a
product with a 0/1 matrix, exact in double. An unknown value under ``handle_unknown='error'`` gives zeros
here: the server refuses it before the graph runs (the manifest lists the categories).

A missing text value (NaN or None among ``categories_`` when the encoder was fitted on missing values)
is the string input's ``MISSING_TEXT`` (""), what the server sends for null; an encoder that knows both a
missing value and the string "" cannot be told apart from it and is refused. Without such a category a
missing value is unknown, as in scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sklearn
from onnx import TensorProto
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.fixes import parse_version

from tabserve.core.schema import MISSING_CATEGORY
from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.registry import register

UNKNOWN = -1
MISSING_TEXT = MISSING_CATEGORY  # a missing value in the string input: what the server sends for null


@dataclass(frozen=True, slots=True)
class FeatureCode:
    """Where one input column's values land: category k -> output column ``columns[k]`` of the block."""

    categories: np.ndarray
    columns: np.ndarray  # int64, one per category; UNKNOWN = no column (dropped)
    unknown: int  # the column an unseen value lands in, or UNKNOWN (all zeros)
    width: int


# handle_unknown='warn' encodes an unknown value as the infrequent category from scikit-learn 1.8 on (its
# PR 32592); 1.6 and 1.7 encode it as all zeros, as 'ignore' does (measured with 1.7.0).
_WARN_IS_INFREQUENT = parse_version(sklearn.__version__) >= parse_version("1.8")


def feature_codes(encoder: OneHotEncoder) -> list[FeatureCode]:
    """The encoding of each input column, read from the fitted encoder as its ``transform`` applies it."""
    infrequent_on = getattr(encoder, "_infrequent_enabled", False)
    mappings = getattr(encoder, "_default_to_infrequent_mappings", None) if infrequent_on else None
    infrequent = getattr(encoder, "_infrequent_indices", None) if infrequent_on else None
    drops = getattr(encoder, "_drop_idx_after_grouping", None)
    to_infrequent = encoder.handle_unknown == "infrequent_if_exist" or (
        encoder.handle_unknown == "warn" and _WARN_IS_INFREQUENT)
    codes = []
    for i, cats in enumerate(encoder.categories_):
        k = np.arange(len(cats), dtype=np.int64)
        grouped = k if mappings is None or mappings[i] is None else np.asarray(mappings[i], dtype=np.int64)
        unknown = UNKNOWN
        if to_infrequent and infrequent is not None and infrequent[i] is not None:
            unknown = int(grouped[int(infrequent[i][0])])
        width = int(grouped.max()) + 1 if len(grouped) else 0
        drop = None if drops is None else drops[i]
        if drop is not None:
            drop = int(drop)
            grouped = np.where(grouped == drop, UNKNOWN, np.where(grouped > drop, grouped - 1, grouped))
            unknown = UNKNOWN if unknown == drop else (unknown - 1 if unknown > drop else unknown)
            width -= 1
        codes.append(FeatureCode(np.asarray(cats), grouped, unknown, width))
    expected = getattr(encoder, "_n_features_outs", None)
    if expected is not None and [c.width for c in codes] != list(expected):
        raise ExportError(f"cannot read this OneHotEncoder's encoding (scikit-learn changed its internals): "
                          f"widths {[c.width for c in codes]} != {list(expected)}")
    return codes


def is_missing(value: object) -> bool:
    """NaN or None: how scikit-learn's encoders hold a missing value among string categories."""
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def text_categories(cats: list[object], who: str, feature: int) -> list[str]:
    """String categories as the graph compares them: a missing one as ``MISSING_TEXT``."""
    if not all(isinstance(c, str) or is_missing(c) for c in cats):
        raise ExportError(f"{who} column {feature} gets strings but its categories are {cats[:5]!r}: fit "
                          f"{'the encoder' if who == 'OneHotEncoder' else 'it'} on string values")
    if any(map(is_missing, cats)) and MISSING_TEXT in cats:
        raise ExportError(f"{who} column {feature} knows both a missing value and the empty string as "
                          "categories; a request's missing value is sent as the empty string, so the two "
                          "cannot be told apart: replace one of them before fitting")
    return [MISSING_TEXT if is_missing(c) else str(c) for c in cats]


def _category_constant(graph: Graph, cats: np.ndarray, x: Tensor, feature: int) -> str:
    if x.dtype == "str":
        texts = text_categories(cats.tolist(), "OneHotEncoder", feature)
        return graph.const(np.array(texts, dtype=object), "categories")
    values = np.asarray(cats)
    if values.dtype.kind not in "fiub" or np.isnan(values.astype(np.float64)).any():
        raise ExportError(f"OneHotEncoder column {feature}: categories {values.tolist()[:5]!r} cannot be "
                          "compared with numbers (missing values must be filled before the encoder)")
    return graph.const(values.astype(np.float64), "categories")


@register(OneHotEncoder)
def convert_one_hot_encoder(graph: Graph, encoder: OneHotEncoder, x: Tensor) -> Tensor:
    blocks, width = [], 0
    for i, code in enumerate(feature_codes(encoder)):
        if code.width == 0:
            continue
        column = graph.op("Gather", [x.name, graph.const(np.array([i], dtype=np.int64), "column")], axis=1)
        equal = graph.op("Equal", [column, _category_constant(graph, code.categories, x, i)])  # [N, m]
        hits = graph.cast(equal, TensorProto.DOUBLE)  # type: ignore[arg-type]
        identity = code.unknown == UNKNOWN and np.array_equal(code.columns, np.arange(len(code.columns)))
        if not identity:
            m = len(code.categories)
            routes = np.zeros((m + 1, code.width))
            known = code.columns != UNKNOWN
            routes[np.flatnonzero(known), code.columns[known]] = 1.0
            if code.unknown != UNKNOWN:
                routes[m, code.unknown] = 1.0
                seen = graph.op("ReduceSum", [hits, graph.const(np.array([1], dtype=np.int64), "axis")],
                                keepdims=1)
                unseen = graph.op("Sub", [graph.const(np.float64(1.0), "one"), seen])
                hits = graph.op("Concat", [hits, unseen], axis=1)
            else:
                routes = routes[:m]
            hits = graph.op("MatMul", [hits, graph.const(routes, "routes")])  # 0/1 sums: exact
        blocks.append(hits)
        width += code.width
    if not blocks:
        raise ExportError("this OneHotEncoder outputs no column")
    out = blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, axis=1)
    return Tensor(out, width, nan=(False,) * width)  # 0/1 columns  # type: ignore[arg-type]
