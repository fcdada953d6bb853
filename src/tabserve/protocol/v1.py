"""The v1 protocol (the original `/api/v1/predict` contract): ``{"data": [...]}`` in, ``{"prediction", ...}`` out.

Requests are decoded with orjson and checked by hand (no per-row pydantic); the pydantic classes
below only document the shapes in the OpenAPI schema.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import FeatureSchema, ModelInput
from tabserve.errors import InvalidInput
from tabserve.protocol import json_scan

MODEL_FORMAT = "onnx"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_SLACK = 64  # arrays, objects and commas a body may hold besides its rows (unknown top-level fields)


def check_rows(body: bytes, max_rows: int, features: int, *, single: bool = False,
               setting: str = "max_batch_rows") -> None:
    """Refuse (422) a body that holds more than ``max_rows`` rows, counted on its bytes before it is parsed.

    Exact for ``data`` and ``records``: their rows are the arrays or objects directly inside them. A body whose
    arrays, objects or values are more than ``max_rows`` rows of ``features`` values can hold (rows hidden in
    nested values or other fields) is refused too: it could not be scored either. A body that cannot hold that
    many (too short, or too few brackets and commas in a first count) is not scanned.
    """
    max_containers = max_rows + 2 + _SLACK
    max_commas = max_rows * (features + 1) + _SLACK
    if len(body) <= 2 * min(max_containers, max_commas):  # "[]," and ",1" take two bytes at least
        return
    containers, commas = json_scan.upper_bounds(body)
    if containers <= max_containers and commas <= max_commas:
        return
    counts = json_scan.count(body)
    if counts is None:  # not one JSON object: the parser says what is wrong
        return
    for field in ("data", "records"):
        rows = counts.items.get(field)
        if rows is not None and rows > max_rows:
            raise _too_many_rows(field, rows, max_rows, setting, single)
    if counts.containers > max_containers or counts.commas > max_commas:
        fix = "send batches to /predict/batch" if single else "split the batch"
        most = "one row" if single else f"{max_rows} rows ({setting})"
        raise InvalidInput(f"the request body holds {counts.containers} JSON arrays and objects and about "
                           f"{counts.commas + 1} values: more than {most} of {features} features can hold: {fix}",
                           limit=max_rows)


def decode_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidInput("the request body is empty; send a JSON object such as {\"data\": [...]}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        hint = " (NaN and Infinity are not valid JSON numbers)" if b"NaN" in body or b"Infinity" in body else ""
        raise InvalidInput(f"the request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the request body must be a JSON object; got a {type(payload).__name__}")
    return payload


def single_data(payload: dict[str, Any]) -> Any:
    if "data" not in payload:
        raise InvalidInput("missing field 'data': send {\"data\": [v1, v2, ...]} with one value per feature",
                           feature="data")
    return payload["data"]


def single_input(payload: dict[str, Any], schema: FeatureSchema) -> ModelInput:
    """One row: ``{"data": [values in feature order]}`` (the seed's shape), or one ``{feature: value}`` object as
    ``{"record": {...}}`` or ``{"records": [{...}]}`` (a batch's records shape, with one record)."""
    if "data" in payload:
        if "record" in payload or "records" in payload:
            raise InvalidInput("send one of 'data', 'record' or 'records', not several")
        return schema.row(payload["data"])
    if "record" in payload:
        if "records" in payload:
            raise InvalidInput("send one of 'data', 'record' or 'records', not several")
        return schema.records([payload["record"]], max_rows=1)
    if "records" in payload:
        records = payload["records"]
        if isinstance(records, list) and len(records) > 1:
            raise _too_many_rows("records", len(records), 1, "max_batch_rows", single=True)
        return schema.records(records, max_rows=1)
    raise InvalidInput("missing field 'data': send {\"data\": [v1, v2, ...]} with one value per feature, or "
                       "{\"record\": {feature: value, ...}}", feature="data")


def batch_field(payload: dict[str, Any], max_rows: int) -> tuple[str, Any]:
    has_data, has_records = "data" in payload, "records" in payload
    if has_data == has_records:
        raise InvalidInput("send exactly one of 'data' (a list of rows) or 'records' (a list of "
                           "{feature: value} objects)")
    field, rows = ("data", payload["data"]) if has_data else ("records", payload["records"])
    if isinstance(rows, list) and len(rows) > max_rows:  # a body the byte count let through says so the same way
        raise _too_many_rows(field, len(rows), max_rows, "max_batch_rows", single=False)
    return field, rows


def check_prefix(prefix: bytes, max_rows: int, *, single: bool = False, setting: str = "max_batch_rows") -> None:
    """Refuse (422) a body whose first bytes, while the rest is still arriving, already hold more than
    ``max_rows`` rows (or more arrays and objects than so many rows can): the rest is then never held."""
    counts = json_scan.count(prefix, prefix=True)
    if counts is None:
        return
    for field in ("data", "records"):
        rows = counts.items.get(field)
        if rows is not None and rows > max_rows:
            raise _too_many_rows(field, rows, max_rows, setting, single, seen=len(prefix))
    if counts.containers > max_rows + 2 + _SLACK:
        most = "one row" if single else f"{max_rows} rows ({setting})"
        raise InvalidInput(f"the first {len(prefix)} bytes of the request body already hold {counts.containers} "
                           f"JSON arrays and objects: more than {most} can hold: "
                           f"{'send batches to /predict/batch' if single else 'split the batch'}", limit=max_rows)


def _too_many_rows(field: str, rows: int, max_rows: int, setting: str, single: bool,
                   seen: int | None = None) -> InvalidInput:
    counted = f"{rows} rows" if seen is None else f"{rows} rows in the first {seen} bytes of the body already"
    if single:
        return InvalidInput(f"'{field}' has {counted}; this endpoint takes one row: send batches to "
                            "/predict/batch", limit=1)
    return InvalidInput(f"'{field}' has {counted}; the limit is {max_rows} rows per request ({setting}): split "
                        "the batch", limit=max_rows)


def _values(arr: np.ndarray) -> Any:
    return arr.tolist() if arr.dtype == object else arr


def _class_keys(model: Model) -> list[str]:
    return [str(c) for c in model.classes or []]


def model_format(model: Model) -> str:
    """``MODEL_FORMAT`` for an exact model (the seed's value); an approximate one says so, with its bound."""
    approx = model.manifest.approximation
    if approx is None:
        return MODEL_FORMAT
    return _approximate_format(approx.max_abs_error, approx.max_rel_error)


@cache
def _approximate_format(max_abs: float, max_rel: float) -> str:
    return f"{MODEL_FORMAT} (approximate, max abs err {max_abs:.2g}, max rel err {max_rel:.2g})"


def _served_by(model: Model, pred: Prediction, t0: float, now: float) -> dict[str, Any]:
    """The fields every v1 prediction response carries, after the prediction(s)."""
    return {
        "latency_ms": pred.latency_s * 1000,
        "total_time_ms": (now - t0) * 1000,
        "model_format": model_format(model),
        "features_count": model.schema.count,
        "model_name": model.name,
        "model_version": model.version,
    }


def encode_single(model: Model, pred: Prediction, warnings: list[str], t0: float, now: float) -> bytes:
    # a Python value: orjson takes numpy arrays but not every numpy scalar (onnxruntime's int64 labels are
    # numpy.longlong, which it refuses)
    out: dict[str, Any] = {"prediction": pred.values.item(0), **_served_by(model, pred, t0, now)}
    if model.is_anomaly and pred.probabilities is not None:  # -1/1, then score_samples and decision_function
        out["score"], out["decision"] = pred.probabilities[0].tolist()
    elif pred.probabilities is not None:
        out["probabilities"] = dict(zip(_class_keys(model), pred.probabilities[0], strict=True))
        out["classes"] = model.classes
    if warnings:
        out["warnings"] = warnings
    return orjson.dumps(out, option=_DUMPS_OPTIONS)


def encode_batch(model: Model, pred: Prediction, warnings: list[str], t0: float, now: float) -> bytes:
    out: dict[str, Any] = {"predictions": _values(pred.values), "rows": int(pred.values.shape[0]),
                           **_served_by(model, pred, t0, now)}
    if model.is_anomaly and pred.probabilities is not None:
        out["scores"] = np.ascontiguousarray(pred.probabilities[:, 0])
        out["decisions"] = np.ascontiguousarray(pred.probabilities[:, 1])
    elif pred.probabilities is not None:
        out["classes"] = model.classes
        out["probabilities"] = pred.probabilities
        # each row as the single-row endpoint gives it: one parser reads both endpoints
        keys = _class_keys(model)
        out["probabilities_by_class"] = [dict(zip(keys, r)) for r in pred.probabilities.tolist()]
    if warnings:
        out["warnings"] = warnings
    return orjson.dumps(out, option=_DUMPS_OPTIONS)


# -- OpenAPI documentation of the shapes above ------------------------------------------------------

class PredictRequest(BaseModel):
    data: list[float] | None = Field(None, description="One row: one value per feature, in the model's feature "
                                     "order.", examples=[[0.1, 0.2, 0.3, 0.4, 0.5]])
    record: dict[str, float] | None = Field(None, description="Or the row as one {feature: value} object.")
    records: list[dict[str, float]] | None = Field(None, description="Or a list holding one such object (the "
                                                   "batch endpoint's shape).")


class PredictResponse(BaseModel):
    prediction: float | int | str = Field(description="Regression value, the class label, or an anomaly model's "
                                         "label: -1 (outlier) or 1 (inlier).")
    probabilities: dict[str, float] | None = Field(None, description="Classification: probability per class.")
    classes: list[Any] | None = Field(None, description="Classification: the class labels, in the order of "
                                      "'probabilities' (as in the batch response).")
    score: float | None = Field(None, description="Anomaly model: score_samples (lower is more abnormal).")
    decision: float | None = Field(None, description="Anomaly model: decision_function, score - offset_; "
                                   "negative for an outlier.")
    latency_ms: float = Field(description="Inference time in onnxruntime.")
    total_time_ms: float = Field(description="Whole request, from arrival to the encoded response.")
    model_format: str = Field(description="'onnx'; a model imported with --approximate: 'onnx (approximate, max "
                              "abs err A, max rel err R)', the error measured when it was imported.")
    features_count: int
    model_name: str
    model_version: str
    warnings: list[str] | None = Field(None, description="Values outside the training range (policy 'warn').")


class BatchRequest(BaseModel):
    data: list[list[float]] | None = Field(None, description="Rows of values in feature order.")
    records: list[dict[str, float]] | None = Field(None, description="Rows as {feature: value} objects.")


class BatchResponse(BaseModel):
    predictions: list[float | int | str]
    rows: int
    classes: list[Any] | None = Field(None, description="Classification: class labels, the column order of "
                                      "'probabilities'.")
    probabilities: list[list[float]] | None = None
    probabilities_by_class: list[dict[str, float]] | None = Field(
        None, description="Classification: each row's {class: probability}, the single-row response's "
        "'probabilities'.")
    scores: list[float] | None = Field(None, description="Anomaly model: score_samples per row.")
    decisions: list[float] | None = Field(None, description="Anomaly model: decision_function per row.")
    latency_ms: float
    total_time_ms: float
    model_format: str
    features_count: int
    model_name: str
    model_version: str
    warnings: list[str] | None = None


class HealthResponse(BaseModel):
    status: str = Field(description="'healthy' when a model is loaded, else 'unhealthy'.")
    model_loaded: bool
    model_format: str
    model_name: str | None = None
    model_version: str | None = None
    features_count: int | None = None
    error: str | None = None


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong and how to fix it.")
    error: str = Field(description="Error kind, e.g. invalid_input, payload_too_large, model_not_ready.")
    row: int | None = None
    feature: str | None = None
    limit: int | None = None
