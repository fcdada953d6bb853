"""MLflow's scoring protocol on the data plane: ``POST /invocations`` and ``GET /ping``, so clients written for
``mlflow models serve`` and SageMaker (which calls the same two paths on port 8080) work unchanged.

Errors keep tabserve's status codes with MLflow's bad-input status (400, as ``mlflow models serve`` answers)
and MLflow's error body, ``{"error_code": "BAD_REQUEST", "message": ...}``, plus tabserve's ``error`` kind and
context (row, feature, limit) and, for a fault of ours, the request id.
"""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve.api.body import header
from tabserve.api.codecs import json_response
from tabserve.api.dataplane import DataPlane, Decoded, PlaneOptions
from tabserve.api.errors import V2_STATUS, UnsupportedMediaType, error_response, status_for
from tabserve.api.routes import Route
from tabserve.api.selection import variant_headers
from tabserve.core.model import Model, Prediction
from tabserve.errors import InvalidInput, TabserveError
from tabserve.protocol import invocations as shapes
from tabserve.protocol import json_scan, v1

CSV, JSON = "text/csv", "application/json"
# MLflow's error codes (databricks_pb2 names) for the statuses tabserve answers
_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
                413: "BAD_REQUEST", 415: "BAD_REQUEST", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                500: "INTERNAL_ERROR", 503: "TEMPORARILY_UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_SLACK = 64


def media_type(scope: Scope) -> str:
    """``text/csv`` or ``application/json`` from the Content-Type header (charset utf-8 only, as MLflow)."""
    raw = header(scope, b"content-type")
    if raw is None:
        raise UnsupportedMediaType("/invocations needs a Content-Type: application/json (dataframe_split, "
                                   "dataframe_records, instances or inputs) or text/csv")
    mime, *params = (p.strip() for p in raw.split(";"))
    mime = mime.lower()
    for p in params:
        key, _, value = p.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(f"Content-Type parameter {p[:60]!r} is not supported: only charset=utf-8")
    if mime not in (CSV, JSON):
        raise UnsupportedMediaType(f"Content-Type {mime[:60]!r} is not supported by /invocations: send "
                                   "application/json or text/csv")
    return mime


class InvocationsCodec:
    protocol = "invocations"
    charges_rows = True

    def __init__(self, options: PlaneOptions) -> None:
        self.options = options

    def peek(self, scope: Scope, prefix: bytes) -> None:
        limit = self.options.max_batch_rows
        if media_type(scope) == CSV:
            lines = prefix.count(b"\n")
            if lines > limit + 1:  # a header line, then rows
                raise InvalidInput(f"the first {len(prefix)} bytes of the CSV body already hold {lines} lines: "
                                  f"more than {limit} rows (max_batch_rows): split the batch", limit=limit)
            return
        counts = json_scan.count(prefix, prefix=True)
        if counts is not None and counts.containers > limit + 2 + _SLACK:
            raise InvalidInput(f"the first {len(prefix)} bytes of the request body already hold {counts.containers} "
                              f"JSON arrays and objects: more than {limit} rows (max_batch_rows) can hold: split "
                              "the batch", limit=limit)

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        limit, schema = self.options.max_batch_rows, model.schema
        if media_type(scope) == CSV:
            x, output = shapes.decode_csv(body, schema, limit), shapes.OUTPUT_LABELS
        else:
            v1.check_rows(body, limit, schema.count)  # on the raw bytes: a body too large is never parsed
            x, output = shapes.decode_json(body, schema, limit)
            shapes.check_output(model, output)
        return Decoded(x, schema.check_ranges(x, self.options.range_policy, single=False), output)

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response:
        headers = {"X-Tabserve-Model-Version": model.version, **(variant_headers(scope) or {})}
        return json_response(shapes.encode(model, pred, decoded.request), headers=headers)

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return invocations_error(exc, request_id)


def invocations_error(exc: TabserveError, request_id: str | None = None) -> Response:
    """MLflow's ``{"error_code", "message"}`` with tabserve's kind and context; the status as v2 maps it (bad
    input 400, as MLflow)."""
    ours = error_response(exc, request_id)  # message, kind, context and headers as every other route says them
    fields = orjson.loads(ours.body)
    status = status_for(exc, V2_STATUS)
    body = {"error_code": _ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": fields.pop("detail"), **fields}
    headers = {k: v for k, v in ours.headers.items() if k.lower() not in ("content-length", "content-type")}
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


class InvocationsEndpoints:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.codec = InvocationsCodec(plane.options)

    def fast_invocations(self, scope: Scope, receive: Receive, params: dict[str, str]) -> Awaitable[Response]:
        return self.plane.infer(self.codec, scope, receive)

    async def invocations(self, request: Request) -> Response:
        return await self.plane.infer(self.codec, request.scope, request.receive)

    async def ping(self) -> Response:
        """200 once the default model is loaded and warm (what SageMaker and MLflow's clients wait for)."""
        models = self.plane.models
        if models.model is not None and models.ready and not models.draining:
            return Response(b"\n", media_type=JSON)
        return Response(orjson.dumps({"status": models.state, "error": models.not_ready_reason()}),
                        status_code=503, media_type=JSON, headers={"Retry-After": "1"})

    def routes(self, doc: dict | None = None) -> list[Route]:
        tags = ["MLflow scoring protocol"]
        return [
            Route("POST", "/invocations", "predict", self.invocations, self.fast_invocations, {
                "summary": "Predict, as `mlflow models serve` and SageMaker answer", "tags": tags,
                "responses": {400: {"description": "Invalid input: the message names row, feature, limit"},
                              415: {"description": "Content-Type other than application/json or text/csv"}},
                **(doc or {})}),
            Route("GET", "/ping", "probe", self.ping, doc={
                "summary": "200 when a model is ready (SageMaker's health check)", "tags": tags,
                "responses": {503: {"description": "No model is ready yet, or the server is shutting down"}}}),
        ]


__all__ = ["InvocationsCodec", "InvocationsEndpoints", "invocations_error"]
