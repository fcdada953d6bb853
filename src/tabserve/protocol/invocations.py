"""MLflow's scoring protocol (``mlflow models serve``, SageMaker): ``POST /invocations`` with a JSON body holding
exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs`` (and optionally ``params``),
or a CSV table (``text/csv``); the answer is ``{"predictions": [...]}``.

Rows reach the model by column name where the request names its columns (extra columns are ignored, as MLflow's
pyfunc ignores them), in feature order where it does not (``dataframe_split`` without ``columns``, ``instances``
as lists of values, a CSV without a header). ``params: {"output": "probabilities"}`` asks a classifier for one
``{class: probability}`` record per row, as tabserve's pyfunc flavor answers it (registry/pyfunc.py).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import orjson

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import FeatureSchema, ModelInput
from tabserve.errors import InvalidInput

DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS = "dataframe_split", "dataframe_records", "instances", "inputs"
FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
PARAMS = "params"
OUTPUT_PARAM, OUTPUT_LABELS, OUTPUT_PROBABILITIES = "output", "predictions", "probabilities"
_SPLIT_KEYS = frozenset({"columns", "data", "index"})


def decode_json(body: bytes, schema: FeatureSchema, max_rows: int) -> tuple[ModelInput, str]:
    """The model input and the output asked for (``predictions`` or ``probabilities``)."""
    if not body:
        raise InvalidInput('the request body is empty; send a JSON object such as {"dataframe_split": '
                           '{"columns": [...], "data": [[...]]}}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the request body must be a JSON object with exactly one of {', '.join(FORMATS)}; "
                           f"got a {type(payload).__name__}")
    present = [k for k in FORMATS if k in payload]
    unknown = sorted(k for k in payload if k not in FORMATS and k != PARAMS)
    if len(present) != 1 or unknown:
        got = ", ".join(map(repr, payload)) or "no field"
        raise InvalidInput(f"the request body must hold exactly one of {', '.join(FORMATS)} (and optionally "
                           f"{PARAMS}); got {got}")
    field = present[0]
    output = _output(payload.get(PARAMS))
    value = payload[field]
    if field == DF_SPLIT:
        return _split(value, schema, max_rows), output
    if field == DF_RECORDS:
        return records(value, schema, max_rows, DF_RECORDS), output
    if field == INSTANCES:
        return _rows_or_records(value, schema, max_rows, INSTANCES), output
    if isinstance(value, dict):  # inputs: {column: [values]} (or {column: value}, one row)
        return _columns(value, schema, max_rows), output
    return _rows_or_records(value, schema, max_rows, INPUTS), output


def check_output(model: Model, output: str) -> None:
    """Refuse, before scoring, probabilities from a model that has none."""
    if output == OUTPUT_PROBABILITIES and (model.is_anomaly or model.manifest.output("probabilities") is None):
        raise InvalidInput(f"params {{'{OUTPUT_PARAM}': '{OUTPUT_PROBABILITIES}'}}: this model "
                           f"({model.manifest.task}) has no class probabilities; leave out params")


def _output(params: Any) -> str:
    if params is None:
        return OUTPUT_LABELS
    if not isinstance(params, dict):
        raise InvalidInput(f"'{PARAMS}' must be an object such as {{\"{OUTPUT_PARAM}\": \"{OUTPUT_PROBABILITIES}\"}}; "
                           f"got {type(params).__name__}")
    output = params.get(OUTPUT_PARAM) or OUTPUT_LABELS
    if output not in (OUTPUT_LABELS, OUTPUT_PROBABILITIES):
        raise InvalidInput(f"params {{'{OUTPUT_PARAM}': {output!r}}}: expected {OUTPUT_LABELS!r} (values or "
                           f"labels) or {OUTPUT_PROBABILITIES!r} (class probabilities)")
    return output


def _split(value: Any, schema: FeatureSchema, max_rows: int) -> ModelInput:
    if not isinstance(value, dict) or "data" not in value or set(value) - _SPLIT_KEYS:
        raise InvalidInput(f"'{DF_SPLIT}' must be an object {{\"columns\": [names], \"data\": [[values], ...]}} "
                           "(pandas' to_dict(orient='split'); 'index' is allowed and ignored)")
    data = value["data"]
    columns = value.get("columns")
    if columns is None:
        return schema.rows(data, max_rows=max_rows)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(f"'{DF_SPLIT}.columns' must be a list of column names")
    if not isinstance(data, list):
        raise InvalidInput(f"'{DF_SPLIT}.data' must be a list of rows; got {type(data).__name__}")
    if columns == schema.names:
        return schema.rows(data, max_rows=max_rows)
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            raise InvalidInput(f"'{DF_SPLIT}.data' row {i}: expected a list of {width} values, one per column",
                               row=i)
    if schema.name_set <= set(columns):  # every feature named: pick its column (extra columns are ignored)
        cols = [columns.index(n) for n in schema.names]
        return schema.rows([[row[c] for c in cols] for row in data], max_rows=max_rows)
    return records([dict(zip(columns, row, strict=True)) for row in data], schema, max_rows, DF_SPLIT)


def records(rows: Any, schema: FeatureSchema, max_rows: int, field: str) -> ModelInput:
    """``{column: value}`` objects; columns the model does not take are ignored."""
    if not isinstance(rows, list):
        raise InvalidInput(f"'{field}' must be a list of {{column: value}} objects; got {type(rows).__name__}")
    names = schema.name_set
    kept = [{k: v for k, v in r.items() if k in names} if isinstance(r, dict) else r for r in rows]
    return schema.records(kept, max_rows=max_rows)


def _rows_or_records(value: Any, schema: FeatureSchema, max_rows: int, field: str) -> ModelInput:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"'{field}' must be a non-empty list of rows (lists of values in feature order, or "
                           "{column: value} objects)")
    if isinstance(value[0], dict):
        return records(value, schema, max_rows, field)
    return schema.rows(value, max_rows=max_rows)


def _columns(value: dict[str, Any], schema: FeatureSchema, max_rows: int) -> ModelInput:
    """``{column: [values]}``: every column as long as the others; all scalars is one row."""
    if all(not isinstance(v, list) for v in value.values()):
        return records([value], schema, max_rows, INPUTS)
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if len(lengths) != 1:
        raise InvalidInput(f"'{INPUTS}': every column must be a list of the same length (one value per row)")
    n = lengths.pop()
    if n > max_rows:
        raise InvalidInput(f"'{INPUTS}' has {n} rows; the limit is {max_rows} rows per request (max_batch_rows): "
                           "split the batch", limit=max_rows)
    if schema.name_set <= value.keys():  # rows from the model's columns, in its order
        return schema.rows(list(map(list, zip(*(value[name] for name in schema.names), strict=True))),
                           max_rows=max_rows)
    kept = {k: v for k, v in value.items() if k in schema.name_set}
    return schema.records([{k: v[i] for k, v in kept.items()} for i in range(n)], max_rows=max_rows)


def decode_csv(body: bytes, schema: FeatureSchema, max_rows: int) -> ModelInput:
    """A CSV table: with a header (pandas' ``to_csv(index=False)``, as MLflow reads it) when the first line names
    every feature, else rows of values in feature order (SageMaker's header-less CSV). An empty field is a
    missing value."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the CSV body is not UTF-8: {exc}") from None
    if body.count(b"\n") > max_rows + 1:  # a header line, then rows; refused before anything is parsed
        raise InvalidInput(f"the CSV body has more than {max_rows} rows, the limit per request (max_batch_rows): "
                           "split the batch", limit=max_rows)
    lines = [r for r in csv.reader(io.StringIO(text)) if r]
    if not lines:
        raise InvalidInput("the CSV body holds no rows")
    header = [c.strip() for c in lines[0]]
    has_header = schema.name_set <= set(header)
    named = schema.name_set & set(header)
    if not has_header and named:
        missing = [n for n in schema.names if n not in named]
        raise InvalidInput(f"the CSV header lacks feature(s) {', '.join(map(repr, missing[:10]))}; it must name "
                           f"every feature ({', '.join(schema.names[:8])}{', ...' if schema.count > 8 else ''})",
                           feature=missing[0])
    data = lines[1:] if has_header else lines
    if len(data) > max_rows:
        raise InvalidInput(f"the CSV body has {len(data)} rows; the limit is {max_rows} rows per request "
                           "(max_batch_rows): split the batch", limit=max_rows)
    if not data:
        raise InvalidInput("the CSV body has a header but no rows")
    if has_header:
        cols = [header.index(n) for n in schema.names]
        width = len(header)
        for i, r in enumerate(data):
            if len(r) != width:
                raise InvalidInput(f"CSV row {i}: {len(r)} fields but the header names {width} columns", row=i)
        data = [[r[c] for c in cols] for r in data]
    return schema.rows(_typed(data, schema), max_rows=max_rows)


def _typed(rows: list[list[str]], schema: FeatureSchema) -> list[list[Any]]:
    """CSV fields as the JSON values the schema checks: numbers for numeric features (empty: null), text for
    categorical ones."""
    numeric = set(schema.numeric_cols)
    out: list[list[Any]] = []
    for i, r in enumerate(rows):
        if len(r) != schema.count:
            raise InvalidInput(f"CSV row {i}: got {len(r)} values but the model expects {schema.count} features "
                               f"({', '.join(schema.names[:8])}{', ...' if schema.count > 8 else ''})", row=i)
        typed: list[Any] = []
        for c, v in enumerate(r):
            if c not in numeric:
                typed.append(v)
            elif not v.strip():
                typed.append(None)
            else:
                try:
                    typed.append(float(v))
                except ValueError:
                    raise InvalidInput(f"CSV row {i}, {schema.describe(c)}: {v[:40]!r} is not a number",
                                       row=i, feature=schema.names[c]) from None
        out.append(typed)
    return out


def encode(model: Model, pred: Prediction, output: str) -> bytes:
    """``{"predictions": [...]}``: values or labels, or one ``{class: probability}`` record per row."""
    if output == OUTPUT_PROBABILITIES and pred.probabilities is not None:
        keys = [str(c) for c in model.classes or range(pred.probabilities.shape[1])]
        rows = [dict(zip(keys, r, strict=True)) for r in pred.probabilities.tolist()]
        return orjson.dumps({"predictions": rows})
    values = pred.values.tolist() if pred.values.dtype == object else np.asarray(pred.values).reshape(-1)
    return orjson.dumps({"predictions": values}, option=orjson.OPT_SERIALIZE_NUMPY)
