"""Explanation requests and responses: v1 (``POST /api/v1/explain``) and the Open Inference Protocol's shape
(``POST /v2/models/{m}/explain``: the infer request in, v2 tensors out).

v1 request: ``{"data": [v1, v2, ...]}`` (one row), ``{"data": [[...], ...]}`` or ``{"records": [{...}]}``
(a batch), with optional ``"top_k"`` (keep the k largest contributions by magnitude per output; the others
are summed into ``"rest"``) and ``"method"`` (``"exact"``, default, or ``"approximate"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, Field

from tabserve.core.explain.explainer import METHODS, Explanation, Method
from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
from tabserve.core.schema import ModelInput
from tabserve.errors import InvalidInput
from tabserve.protocol.v1 import decode_object

_DUMPS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class ExplainRequest:
    single: bool
    rows: Any  # the 'data' row, or rows, or records
    records: bool
    top_k: int | None
    method: Method


def decode_request(body: bytes) -> ExplainRequest:
    payload = decode_object(body)
    top_k, method = options(payload)
    has_data, has_records = "data" in payload, "records" in payload
    if has_data == has_records:
        raise InvalidInput("send exactly one of 'data' (one row: a list of values; several: a list of rows) or "
                           "'records' (a list of {feature: value} objects)")
    if has_records:
        return ExplainRequest(False, payload["records"], True, top_k, method)
    data = payload["data"]
    single = not (isinstance(data, list) and data and all(isinstance(r, list) for r in data))
    return ExplainRequest(single, data, False, top_k, method)


def options(payload: dict[str, Any]) -> tuple[int | None, Method]:
    top_k, method = payload.get("top_k"), payload.get("method", "exact")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInput(f"'top_k' must be a whole number >= 1; got {quoted(top_k)}", feature="top_k")
    if method not in METHODS:
        raise InvalidInput(f"'method' must be one of {', '.join(map(repr, METHODS))}; got {quoted(method)}",
                           feature="method")
    return top_k, method


def model_rows(model: Model, request: ExplainRequest, max_rows: int) -> ModelInput:
    schema = model.schema
    if request.single:
        return schema.row(request.rows)
    if request.records:
        return schema.records(request.rows, max_rows=max_rows)
    return schema.rows(request.rows, max_rows=max_rows)


def _contributions(values: np.ndarray, names: list[str], top_k: int | None) -> dict[str, Any]:
    order = np.argsort(-np.abs(values), kind="stable")
    kept = order[:top_k] if top_k is not None else order
    out: dict[str, Any] = {"contributions": {names[i]: float(values[i]) for i in kept}}
    if top_k is not None and top_k < len(order):
        out["rest"] = float(values[order[top_k:]].sum())
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def row_body(model: Model, e: Explanation, pred: Prediction, r: int, top_k: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prediction": _plain(pred.values[r])}
    if model.is_classifier:
        if pred.probabilities is not None:
            body["probabilities"] = {str(c): float(p) for c, p in zip(model.classes or [], pred.probabilities[r],
                                                                     strict=False)}
        body["outputs"] = {label: {"expected_value": float(e.expected_value[k]), "output": float(e.output[r, k]),
                                   **_contributions(e.contributions[r, k], e.features, top_k)}
                           for k, label in enumerate(e.outputs)}
    else:
        body |= {"expected_value": float(e.expected_value[0]), "output": float(e.output[r, 0]),
                 **_contributions(e.contributions[r, 0], e.features, top_k)}
    return body


def encode_v1(model: Model, e: Explanation, pred: Prediction, request: ExplainRequest, seconds: float) -> bytes:
    head = {"model_name": model.name, "model_version": model.version, "method": e.method,
            "algorithm": e.algorithm, "output_space": e.space}
    rows = [row_body(model, e, pred, r, request.top_k) for r in range(len(e.output))]
    tail = {"explain_ms": round(e.seconds * 1000, 3), "total_time_ms": round(seconds * 1000, 3)}
    if request.single:
        return orjson.dumps({**head, **rows[0], **tail}, option=_DUMPS)
    return orjson.dumps({**head, "explanations": rows, **tail}, option=_DUMPS)


def encode_v2(model: Model, e: Explanation, pred: Prediction, request_id: str | None) -> bytes:
    """Open Inference Protocol response: ``contributions`` [rows, outputs, features], ``expected_value``
    [outputs], ``output`` [rows, outputs] and the model's ``prediction``; names in ``parameters``."""
    n, k, f = e.contributions.shape
    values = pred.values
    label_type = "BYTES" if values.dtype == object or values.dtype.kind in "US" else (
        "INT64" if values.dtype.kind in "iu" else "FP64")
    outputs = [
        {"name": "contributions", "datatype": "FP64", "shape": [n, k, f], "data": e.contributions.reshape(-1)},
        {"name": "expected_value", "datatype": "FP64", "shape": [k], "data": e.expected_value},
        {"name": "output", "datatype": "FP64", "shape": [n, k], "data": e.output.reshape(-1)},
        {"name": "prediction", "datatype": label_type, "shape": [n],
         "data": values.tolist() if label_type == "BYTES" else values},
    ]
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs,
                            "parameters": {"feature_names": e.features, "output_names": e.outputs,
                                           "method": e.method, "algorithm": e.algorithm,
                                           "output_space": e.space}}
    if request_id is not None:
        body["id"] = request_id
    return orjson.dumps(body, option=_DUMPS)


class ExplainBody(BaseModel):
    """``POST /api/v1/explain`` (documentation only: requests are decoded by hand)."""

    data: list[Any] | None = Field(None, description="one row (values in feature order) or a list of rows",
                                   examples=[[0.1, -1.2, 0.3, 2.0, 0.5]])
    records: list[dict[str, Any]] | None = Field(None, description="rows as {feature: value} objects")
    top_k: int | None = Field(None, ge=1, description="keep the k largest contributions (by magnitude) per "
                                                      "output; the rest are summed into 'rest'")
    method: str = Field("exact", description="'exact' (path-dependent TreeSHAP) or 'approximate' (Saabas)")
