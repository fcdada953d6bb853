"""The wire formats on the data plane: the original v1 JSON, the Open Inference Protocol (v2) with Triton's
binary tensors, and explanations in both. Each is ``peek`` (the first MiBs of a large body), ``decode`` (bytes to
validated rows), ``encode`` (prediction to response) and ``error`` (the protocol's error body)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Scope

from tabserve.api.body import header
from tabserve.api.dataplane import Decoded, PlaneOptions
from tabserve.api.errors import error_response, v2_error_response
from tabserve.api.selection import variant_headers
from tabserve.core.model import Model, Prediction
from tabserve.errors import TabserveError
from tabserve.protocol import explain as shapes
from tabserve.protocol import v1, v2
from tabserve.protocol.tensors import HEADER_LENGTH
from tabserve.protocol.v2_inputs import model_input

HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()
JSON = "application/json"


_JSON_TYPE = (b"content-type", b"application/json")


class JSONBytes(Response):
    """An encoded JSON body as a response, its headers built directly (Starlette's ``init_headers`` scans and
    re-encodes them: ~3% of a one-row request)."""

    media_type = JSON

    def __init__(self, body: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.status_code = status_code
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(body, status, headers)


class V1Codec:
    """``{"data": [...]}`` (one row) or ``{"data": [[...], ...]}`` / ``{"records": [...]}`` (a batch)."""

    protocol = "v1"

    def __init__(self, options: PlaneOptions, *, single: bool) -> None:
        self.options = options
        self.single = single
        self.charges_rows = not single

    def peek(self, scope: Scope, prefix: bytes) -> None:
        if self.single:
            v1.check_prefix(prefix, 1, single=True)
        else:
            v1.check_prefix(prefix, self.options.max_batch_rows)

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        schema, policy = model.schema, self.options.range_policy
        if self.single:
            v1.check_rows(body, 1, schema.count, single=True)
            payload = v1.decode_object(body)
            data = payload.get("data")
            if type(data) is list and len(payload) == 1:  # {"data": [numbers]}: the usual request
                plain = schema.plain_row(data, policy)
                if plain is not None:
                    return Decoded(*plain)
            x = v1.single_input(payload, schema)
            return Decoded(x, schema.check_ranges(x, policy, single=True))
        limit = self.options.max_batch_rows
        v1.check_rows(body, limit, schema.count)  # on the raw bytes: a body too large is never parsed
        field, rows = v1.batch_field(v1.decode_object(body), limit)
        x = schema.rows(rows, max_rows=limit) if field == "data" else schema.records(rows, max_rows=limit)
        return Decoded(x, schema.check_ranges(x, policy, single=False))

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response:
        encode = v1.encode_single if self.single else v1.encode_batch
        return json_response(encode(model, pred, decoded.warnings, t0, time.perf_counter()),
                             headers=variant_headers(scope))

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return error_response(exc, request_id)


class V2Signatures:
    """What the v2 codecs (REST and gRPC) share: the options and the served model's v2 signature, built once per
    model version."""

    def __init__(self, options: PlaneOptions) -> None:
        self.options = options
        self._signature: v2.Signature | None = None

    def signature(self, model: Model) -> v2.Signature:
        sig = self._signature
        if sig is None or sig.model is not model:
            sig = self._signature = v2.Signature(model)
        return sig


class V2Codec(V2Signatures):
    """Open Inference Protocol infer requests, JSON or with Triton's binary tensors after the JSON header."""

    protocol = "v2"
    charges_rows = True

    def peek(self, scope: Scope, prefix: bytes) -> None:
        v2.check_prefix(prefix, header(scope, HEADER_LENGTH_KEY), v2.RowLimit(self.options.max_batch_rows, 0))

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        limit = self.options.max_batch_rows
        request = v2.decode_infer_request(body, header(scope, HEADER_LENGTH_KEY),
                                          v2.RowLimit(limit, model.schema.count))
        sig = self.signature(model)
        outputs = sig.select_outputs(request)
        x = model_input(model.schema, sig.input_names, request.inputs, max_rows=limit)
        return Decoded(x, model.schema.check_ranges(x, self.options.range_policy, single=False), request, outputs)

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response:
        out, json_length = v2.encode_infer_response(model, decoded.request, decoded.outputs, pred, decoded.warnings)
        headers = variant_headers(scope)
        if json_length is None:
            return json_response(out, headers=headers)
        return Response(out, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length), **(headers or {})})

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return v2_error_response(exc, request_id)


class ExplainLimits:
    """Explanations take at most ``explain_max_rows`` rows (and never more than ``max_batch_rows``)."""

    def __init__(self, explain_max_rows: int, max_batch_rows: int) -> None:
        self.max_rows = min(explain_max_rows, max_batch_rows)
        self.setting = "explain_max_rows" if explain_max_rows < max_batch_rows else "max_batch_rows"


class ExplainV1Codec:
    protocol = "explain-v1"
    charges_rows = True  # an explanation pays for its rows like a batch prediction

    def __init__(self, limits: ExplainLimits) -> None:
        self.limits = limits

    def peek(self, scope: Scope, prefix: bytes) -> None:
        v1.check_prefix(prefix, self.limits.max_rows, setting=self.limits.setting)

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        v1.check_rows(body, self.limits.max_rows, model.schema.count, setting=self.limits.setting)
        parsed = shapes.decode_request(body)
        return Decoded(shapes.model_rows(model, parsed, self.limits.max_rows), [], parsed)

    def explain(self, service: Any, model: Model, decoded: Decoded, t0: float) -> bytes:
        explanation, pred = service.explain(model, decoded.x, decoded.request.method)
        return shapes.encode_v1(model, explanation, pred, decoded.request, time.perf_counter() - t0)

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response:
        raise NotImplementedError("explanations are encoded by explain(), on the explanation worker")

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return error_response(exc, request_id)


class ExplainV2Codec(ExplainV1Codec):
    protocol = "explain-v2"

    def peek(self, scope: Scope, prefix: bytes) -> None:
        return None  # binary tensors say nothing about rows until their header is read whole

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        header_length = header(scope, HEADER_LENGTH_KEY)
        limit = v2.RowLimit(self.limits.max_rows, model.schema.count, self.limits.setting)
        parsed = v2.decode_infer_request(body, header_length, limit)
        _, method = shapes.options(_v2_parameters(body, header_length))
        x = model_input(model.schema, v2.Signature(model).input_names, parsed.inputs, max_rows=self.limits.max_rows)
        return Decoded(x, [], (parsed.id, method))

    def explain(self, service: Any, model: Model, decoded: Decoded, t0: float) -> bytes:
        request_id, method = decoded.request
        explanation, pred = service.explain(model, decoded.x, method)
        return shapes.encode_v2(model, explanation, pred, request_id)

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return v2_error_response(exc, request_id)


def _v2_parameters(body: bytes, header_length: str | None) -> dict[str, Any]:
    """The request's ``parameters`` object (``method``), from its JSON part."""
    json_part = body[:int(header_length)] if header_length and header_length.isdigit() else body
    params = v2.parameters(v2.decode_object(json_part).get("parameters"), "parameters")
    return {k: params[k] for k in ("method",) if k in params}


__all__ = ["HEADER_LENGTH_KEY", "ExplainLimits", "ExplainV1Codec", "ExplainV2Codec", "V1Codec", "V2Codec",
           "json_response", "orjson"]
