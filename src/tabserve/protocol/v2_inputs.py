"""v2 input tensors -> the model's input, through the feature schema that checks and explains every value.

Three layouts are accepted:
- the model's own input tensors, named as in its metadata: ``[rows, numeric features]`` (FP32, FP64, INT, BOOL)
  and, for a model with categorical features, ``[rows, categorical features]`` (BYTES);
- for a model whose features are all numeric, one ``[rows, features]`` tensor of any name that is not a feature;
- one tensor per feature, named after it, of shape ``[rows]`` or ``[rows, 1]`` (BYTES for a categorical feature).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tabserve.core.quoting import quoted
from tabserve.core.schema import FeatureSchema, ModelInput
from tabserve.errors import InvalidInput
from tabserve.protocol.tensors import BYTES, Tensor, flat_values


class ModelTensors(NamedTuple):
    """The names of the model's own input tensors (``None`` where it has no such features)."""

    numeric: str | None
    categorical: str | None


def model_input(schema: FeatureSchema, tensors: ModelTensors, inputs: list[Tensor], *, max_rows: int) -> ModelInput:
    if len(inputs) == 1:
        only = inputs[0]
        if tensors.categorical is None and (only.name == tensors.numeric or only.name not in schema.index):
            return _from_model_tensors(schema, only, None, max_rows)
    elif len(inputs) == 2 and tensors.numeric is not None and tensors.categorical is not None:
        by_name = {t.name: t for t in inputs}
        if by_name.keys() == {tensors.numeric, tensors.categorical}:
            return _from_model_tensors(schema, by_name[tensors.numeric], by_name[tensors.categorical], max_rows)
    if len(inputs) == 1 and tensors.numeric is None and inputs[0].name == tensors.categorical:
        return _from_model_tensors(schema, None, inputs[0], max_rows)
    return _from_columns(schema, inputs, max_rows)


def _from_model_tensors(schema: FeatureSchema, num: Tensor | None, cat: Tensor | None, max_rows: int) -> ModelInput:
    numeric_count, categorical_count = len(schema.numeric_cols), len(schema.categorical_cols)
    rows = None
    if num is not None:
        if num.datatype == BYTES:
            raise InvalidInput(f"input {quoted(num.name)} is BYTES (strings) but it holds the numeric features "
                               f"({_names(schema, schema.numeric_cols)}); send FP32, FP64, INT64 or BOOL data")
        rows = _check_matrix(schema, num, numeric_count, "numeric " if categorical_count else "", max_rows)
    if cat is not None:
        if cat.datatype != BYTES:
            raise InvalidInput(f"input {quoted(cat.name)} holds the categorical features "
                               f"({_names(schema, schema.categorical_cols)}): send it as BYTES (strings)")
        cat_rows = _check_matrix(schema, cat, categorical_count, "categorical ", max_rows)
        if rows is not None and cat_rows != rows:
            raise InvalidInput(f"input {quoted(cat.name)} has {cat_rows} rows but input {quoted(num.name)} has {rows}")
    if cat is None:
        assert num is not None
        if num.is_numeric:
            return schema.as_input(num.array, single=False)
        # Strings, nulls, nested values: the schema names the row and the feature (or accepts huge integers).
        return schema.rows(_chunks(flat_values(num), numeric_count), max_rows=max_rows)
    columns: list[list[Any]] = [[] for _ in range(schema.count)]
    for tensor, cols in ((num, schema.numeric_cols), (cat, schema.categorical_cols)):
        if tensor is not None:
            for row in _chunks(flat_values(tensor), len(cols)):
                for c, v in zip(cols, row, strict=True):
                    columns[c].append(v)
    return schema.rows([list(r) for r in zip(*columns, strict=True)], max_rows=max_rows)


def _check_matrix(schema: FeatureSchema, t: Tensor, count: int, kind: str, max_rows: int) -> int:
    if len(t.shape) != 2 or t.shape[1] != count:
        cols = schema.categorical_cols if kind == "categorical " else schema.numeric_cols
        raise InvalidInput(
            f"input {quoted(t.name)} has shape {t.shape} but the model expects [rows, {count}]: {count} {kind}features "
            f"({_names(schema, cols)}); or send one input per feature, named after it",
            limit=count,
        )
    _check_rows(t.name, t.shape[0], max_rows)
    return t.shape[0]


def _from_columns(schema: FeatureSchema, inputs: list[Tensor], max_rows: int) -> ModelInput:
    by_name: dict[str, Tensor] = {}
    for t in inputs:
        if t.name in by_name:
            raise InvalidInput(f"input {quoted(t.name)} is given twice")
        by_name[t.name] = t
    if by_name.keys() != schema.name_set:
        _explain_names(schema, by_name)
    first = inputs[0]
    rows = first.shape[0] if first.shape else 0
    categorical = set(schema.categorical_cols)
    for t in inputs:
        if schema.index[t.name] in categorical:
            if t.datatype != BYTES:
                raise InvalidInput(f"feature {quoted(t.name)} is categorical: send input {quoted(t.name)} as BYTES (strings)",
                                   feature=t.name)
        elif t.datatype == BYTES:
            raise InvalidInput(f"input {quoted(t.name)} is BYTES (strings) but feature {quoted(t.name)} is numeric; send it "
                               "as FP32, FP64, INT64 or BOOL", feature=t.name)
        if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            raise InvalidInput(f"input {quoted(t.name)} has shape {t.shape}; a feature input has shape [rows] or "
                               "[rows, 1]", feature=t.name)
        if t.shape[0] != rows:
            raise InvalidInput(f"input {quoted(t.name)} has {t.shape[0]} rows but input {quoted(first.name)} has {rows}; "
                               "every feature input needs the same number of rows", feature=t.name)
    _check_rows(first.name, rows, max_rows)
    columns = [by_name[n] for n in schema.names]
    if not categorical and all(c.is_numeric for c in columns):
        # float64 unless every column already has the model's dtype: the schema then reports overflow by feature.
        same = all(c.array.dtype == schema.dtype for c in columns)
        x = np.empty((rows, schema.count), dtype=schema.dtype if same else np.float64)
        for j, c in enumerate(columns):
            x[:, j] = c.array.reshape(-1)
        return schema.as_input(x, single=False)
    return schema.rows([list(r) for r in zip(*(flat_values(c) for c in columns), strict=True)], max_rows=max_rows)


def _check_rows(name: str, rows: int, max_rows: int) -> None:
    if rows == 0:
        raise InvalidInput(f"input {quoted(name)} has 0 rows: send at least one row", limit=1)
    if rows > max_rows:
        raise InvalidInput(f"input {quoted(name)} has {rows} rows; the limit is {max_rows} rows per request: "
                           "split the batch", limit=max_rows)


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def _explain_names(schema: FeatureSchema, by_name: dict[str, Tensor]) -> None:
    missing = [n for n in schema.names if n not in by_name]
    unknown = [n for n in by_name if n not in schema.index]
    parts = []
    if unknown:
        parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
    if missing:
        parts.append(f"missing feature input(s) {', '.join(map(repr, missing))}")
    raise InvalidInput(
        f"{' and '.join(parts)}: send one input per feature ({_names(schema)}), each of shape [rows], or the "
        "model's input tensors (GET /v2/models/<name> lists both)",
        feature=(unknown or missing)[0],
    )


def _names(schema: FeatureSchema, cols: list[int] | None = None) -> str:
    names = schema.names if cols is None else [schema.names[c] for c in cols]
    shown = ", ".join(names[:8])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
