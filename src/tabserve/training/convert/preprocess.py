"""Numeric transformers, computed in double with scikit-learn's own operations in its own order.

Every step here is element-wise (one rounding per IEEE operation, as numpy does), so the ONNX values are
bit-identical to scikit-learn's: StandardScaler ``(X - mean_) / scale_``, RobustScaler
``(X - center_) / scale_``, MaxAbsScaler ``X / scale_``, MinMaxScaler ``X * scale_ + min_`` (then
clipped), SimpleImputer ``statistics_`` where a value is missing. NaN passes through the scalers as it
does in scikit-learn. (FunctionTransformer, identity included: ``elementwise``.)

A SimpleImputer on strings (most_frequent or constant) writes its string ``statistics_`` where a value is
missing. The string input holds a missing text value as ``MISSING_TEXT`` (""), what the server sends for
null, so a NaN marker (what pandas reads for an empty field) is a match with ""; a "" marker is the same
match; a None marker never matches, since no request can give None apart from NaN (scikit-learn refuses
NaN there, and so does the server).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from tabserve.core.schema import MISSING_CATEGORY
from tabserve.errors import ExportError
from tabserve.training.convert.graph import Affine, Graph, Tensor
from tabserve.training.convert.registry import register


def numeric(x: Tensor, who: object) -> Tensor:
    """``x`` itself when it holds numbers; a clear error when it holds strings."""
    if x.dtype != "float64":
        raise ExportError(f"{type(who).__name__} gets string columns; encode them first "
                          "(e.g. a ColumnTransformer with a OneHotEncoder on the string columns)")
    return x


def _columns(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def _affine(graph: Graph, x: Tensor, sub: np.ndarray | None, div: np.ndarray | None) -> Tensor:
    out = x.name
    if sub is not None:
        out = graph.op("Sub", [out, graph.const(sub, "center")])
    if div is not None:
        out = graph.op("Div", [out, graph.const(div, "scale")])
    # Trees after this step may compare the unscaled input instead: the map is monotone per column.
    foldable = ((sub is None or bool(np.all(np.isfinite(sub))))
                and (div is None or bool(np.all(np.isfinite(div) & (div > 0)))))
    return Tensor(out, x.width, nan=x.nan,  # type: ignore[arg-type]
                  affine=Affine(x.name, sub, div) if foldable else None)


@register(StandardScaler)
def convert_standard_scaler(graph: Graph, scaler: StandardScaler, x: Tensor) -> Tensor:
    numeric(x, scaler)
    mean = _columns(scaler.mean_) if scaler.with_mean else None
    scale = _columns(scaler.scale_) if scaler.with_std else None
    return _affine(graph, x, mean, scale)


@register(RobustScaler)
def convert_robust_scaler(graph: Graph, scaler: RobustScaler, x: Tensor) -> Tensor:
    numeric(x, scaler)
    center = _columns(scaler.center_) if scaler.with_centering else None
    scale = _columns(scaler.scale_) if scaler.with_scaling else None
    return _affine(graph, x, center, scale)


@register(MaxAbsScaler)
def convert_max_abs_scaler(graph: Graph, scaler: MaxAbsScaler, x: Tensor) -> Tensor:
    return _affine(graph, numeric(x, scaler), None, _columns(scaler.scale_))


@register(MinMaxScaler)
def convert_min_max_scaler(graph: Graph, scaler: MinMaxScaler, x: Tensor) -> Tensor:
    numeric(x, scaler)
    scaled = graph.op("Mul", [x.name, graph.const(_columns(scaler.scale_), "scale")])
    out = graph.op("Add", [scaled, graph.const(_columns(scaler.min_), "min")])
    if scaler.clip:
        # np.clip keeps NaN; comparisons with NaN are false, so Where keeps it too.
        low, high = (graph.const(np.float64(v), "bound") for v in scaler.feature_range)
        out = graph.op("Where", [graph.op("Less", [out, low]), low, out])
        out = graph.op("Where", [graph.op("Greater", [out, high]), high, out])
    return Tensor(out, x.width, nan=x.nan)  # type: ignore[arg-type]


def nan_is_marker(missing_values: object) -> bool:
    return isinstance(missing_values, float) and bool(np.isnan(missing_values)) or missing_values is None


def missing_mask(graph: Graph, x: str, missing_values: object) -> str:
    """Where ``x`` holds the imputer's missing marker (NaN, or a number such as -1)."""
    if nan_is_marker(missing_values):
        return graph.op("IsNaN", [x])  # type: ignore[return-value]
    if isinstance(missing_values, int | float | np.number) and not isinstance(missing_values, bool):
        return graph.op("Equal", [x, graph.const(np.float64(missing_values), "missing")])  # type: ignore
    raise ExportError(f"SimpleImputer(missing_values={missing_values!r}) on numeric columns: only NaN or a "
                      "number can mark a missing value")


MISSING_TEXT = MISSING_CATEGORY  # a missing value in the string input


def _impute_strings(graph: Graph, imputer: SimpleImputer, x: Tensor) -> Tensor:
    marker = imputer.missing_values
    if not (nan_is_marker(marker) or marker == MISSING_TEXT):
        raise ExportError(f"SimpleImputer(missing_values={marker!r}) on string columns: only NaN, None or \"\" "
                          "can mark a missing text value")
    if imputer.add_indicator:
        raise ExportError("SimpleImputer(add_indicator=True) on string columns is not supported: its 0/1 "
                          "columns would sit beside strings; add the indicator on numeric columns only")
    stats = list(imputer.statistics_)
    empty = [isinstance(v, float) and np.isnan(v) for v in stats]  # no value seen in fit
    if any(not e and not isinstance(v, str) for v, e in zip(stats, empty, strict=True)):
        raise ExportError(f"SimpleImputer statistics {stats!r} on string columns are not strings; give a "
                          "string fill_value")
    if any(empty) and imputer.keep_empty_features:
        raise ExportError("SimpleImputer(keep_empty_features=True) on a string column without any value in fit "
                          "is not supported; drop the column")
    keep = np.flatnonzero(~np.array(empty, dtype=bool))
    out = x.name
    if marker is not None:  # None: see the module docstring
        mask = graph.op("Equal", [out, graph.const(np.array([MISSING_TEXT], dtype=object), "missing")])
        fills = np.array(["" if e else v for v, e in zip(stats, empty, strict=True)], dtype=object)  # "": never read
        out = graph.op("Where", [mask, graph.const(fills.reshape(1, -1), "statistics"), out])
    if len(keep) < x.width:
        out = graph.op("Gather", [out, graph.const(keep.astype(np.int64), "kept")], axis=1)
    return Tensor(out, len(keep), "str")  # type: ignore[arg-type]


@register(SimpleImputer)
def convert_simple_imputer(graph: Graph, imputer: SimpleImputer, x: Tensor) -> Tensor:
    if x.dtype == "str":
        return _impute_strings(graph, imputer, x)
    numeric(x, imputer)
    try:  # a 'constant' fill value is stored with dtype object
        stats = np.asarray(imputer.statistics_, dtype=np.float64)
    except (TypeError, ValueError):
        raise ExportError(f"SimpleImputer statistics {list(imputer.statistics_)!r} are not numbers") from None
    mask = missing_mask(graph, x.name, imputer.missing_values)
    # As sklearn: a column whose statistic is NaN (no value seen in fit) is dropped, unless kept.
    keep = np.arange(x.width) if imputer.keep_empty_features else np.flatnonzero(~np.isnan(stats))
    filled = graph.op("Where", [mask, graph.const(stats, "statistics"), x.name])
    if len(keep) < x.width:
        filled = graph.op("Gather", [filled, graph.const(keep.astype(np.int64), "kept")], axis=1)
    width = len(keep)
    # NaN is filled when it is the marker; another marker leaves NaN where it was
    filled_nan = np.isnan(stats[keep]) | (x.may_be_nan()[keep] & (not nan_is_marker(imputer.missing_values)))
    if not imputer.add_indicator:
        return Tensor(filled, width, nan=tuple(filled_nan.tolist()))  # type: ignore[arg-type]
    features = np.asarray(imputer.indicator_.features_, dtype=np.int64)
    indicated = graph.op("Gather", [mask, graph.const(features, "indicated")], axis=1)
    indicator = graph.cast(indicated, TensorProto.DOUBLE)  # type: ignore[arg-type]
    out = graph.op("Concat", [filled, indicator], axis=1)
    nan = (*filled_nan.tolist(), *(False,) * len(features))
    return Tensor(out, width + len(features), nan=nan)  # type: ignore[arg-type]
