"""Seed-compatible routes: ``/api/v1/predict``, ``/predict/batch``, ``/predict/health``, ``/models``."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve.api.body import BodyBudget, decompress_body, header, receive_body
from tabserve.api.errors import error_response
from tabserve.api.openapi import body_doc
from tabserve.api.ratelimit import RateLimiter
from tabserve.api.selection import select_model, variant_headers
from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.errors import TabserveError
from tabserve.observability.requests import REQUEST_START
from tabserve.protocol import v1
from tabserve.serving.batcher import rows_of
from tabserve.serving.manager import ModelManager
from tabserve.settings import Settings

_ERRORS = {422: {"model": v1.ErrorResponse, "description": "Invalid input: the message names row, feature, limit"},
           413: {"model": v1.ErrorResponse, "description": "Body over the size limit (after gzip/deflate decoding)"},
           415: {"model": v1.ErrorResponse, "description": "Content-Encoding other than gzip, deflate or identity"},
           429: {"model": v1.ErrorResponse, "description": "Rate limit spent (each row counts); see Retry-After"},
           503: {"model": v1.ErrorResponse, "description": "No model is ready yet"}}


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)



class V1Endpoints:
    """Handlers bound to one manager and settings. Decoding and validation run inline for small bodies and in
    a worker thread for large ones; scoring goes through the model's micro-batcher."""

    def __init__(self, manager: ModelManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings
        self.timeout_s = settings.request_timeout_ms / 1000 or None
        self.limiter: RateLimiter | None = None  # set by create_app when rate limits are on: batches pay rows
        self.budget = BodyBudget.from_settings(settings)  # create_app shares one with v2 and explain

    async def peek_single(self, prefix: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.manager.executor, partial(
            v1.check_prefix, prefix, 1, single=True))

    async def peek_batch(self, prefix: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.manager.executor, partial(
            v1.check_prefix, prefix, self.settings.max_batch_rows))

    def decode_single(self, model: Model, body: bytes) -> tuple[ModelInput, list[str]]:
        v1.check_rows(body, 1, model.schema.count, single=True)
        x = model.schema.row(v1.single_data(v1.decode_object(body)))
        return x, model.schema.check_ranges(x, self.settings.range_policy, single=True)

    def decode_batch(self, model: Model, body: bytes) -> tuple[ModelInput, list[str]]:
        limit = self.settings.max_batch_rows
        v1.check_rows(body, limit, model.schema.count)  # on the raw bytes: a body too large is never parsed
        field, rows = v1.batch_field(v1.decode_object(body), limit)
        x = model.schema.rows(rows, max_rows=limit) if field == "data" else model.schema.records(rows, max_rows=limit)
        return x, model.schema.check_ranges(x, self.settings.range_policy, single=False)

    async def handle(self, scope: Scope, receive: Receive, single: bool, name: str | None = None,
                     version: str | None = None) -> Response:
        """The whole request from ASGI primitives: what the hot-path dispatcher and the routes both call.
        ``name``/``version``: the model the URL names (default: the default model, routed by traffic policy)."""
        t0 = scope.get(REQUEST_START) or time.perf_counter()
        lease = self.budget.lease()
        try:
            limit = self.settings.max_body_bytes
            peek = self.peek_single if single else self.peek_batch
            body = decompress_body(await receive_body(scope, receive, limit, lease, peek),
                                   header(scope, b"content-encoding"), limit, lease)
            model = await select_model(self.manager, scope, name, version)
            decode = self.decode_single if single else self.decode_batch
            batcher = self.manager.batcher(model)
            pred = None
            if len(body) <= self.settings.inline_max_bytes:
                x, warnings = decode(model, body)
            else:  # parsing and checking thousands of rows would hold up every other request
                scores_now = self.limiter is None  # rows are charged before they are scored

                def work() -> tuple[ModelInput, list[str], Prediction | None]:
                    x, warnings = decode(model, body)
                    return x, warnings, batcher.score_if_alone(x) if scores_now else None

                x, warnings, pred = await asyncio.get_running_loop().run_in_executor(self.manager.executor, work)
            if self.limiter is not None and not single:
                await self.limiter.charge_rows(scope, rows_of(x))
            if pred is None:
                pred = await batcher.predict(x, self.timeout_s)
        except TabserveError as exc:
            return error_response(exc)
        finally:
            lease.release()
        if version is None:
            self.manager.traffic.shadow(model.name, model, x, pred)
        encode = v1.encode_single if single else v1.encode_batch
        return _json(encode(model, pred, warnings, t0, time.perf_counter()), headers=variant_headers(scope))

    async def predict(self, request: Request) -> Response:
        return await self.handle(request.scope, request.receive, True)

    async def predict_batch(self, request: Request) -> Response:
        return await self.handle(request.scope, request.receive, False)

    async def health(self) -> Response:
        model = self.manager.model
        failure = self.manager.last_failure
        return _json(v1.HealthResponse(
            status="healthy" if model else "unhealthy",
            model_loaded=model is not None,
            model_format=v1.MODEL_FORMAT,
            model_name=model.name if model else None,
            model_version=model.version if model else None,
            features_count=model.schema.count if model else None,
            error=failure.message if failure and not model else None,
        ).model_dump_json(exclude_none=True).encode())

    async def predict_named(self, request: Request, name: str) -> Response:
        return await self.handle(request.scope, request.receive, True, name)

    async def predict_batch_named(self, request: Request, name: str) -> Response:
        return await self.handle(request.scope, request.receive, False, name)

    async def predict_version(self, request: Request, name: str, version: str) -> Response:
        return await self.handle(request.scope, request.receive, True, name, version)

    async def predict_batch_version(self, request: Request, name: str, version: str) -> Response:
        return await self.handle(request.scope, request.receive, False, name, version)

    def _model_info(self, name: str) -> dict:
        slot = self.manager.slot(name)
        model = slot.model
        info = model.manifest.model_dump(mode="json") if model is not None else {"name": name}
        if model is not None:
            info["name"], info["version"], info["manifest_version"] = model.name, model.version, \
                model.manifest.version
        info["serving"] = slot.describe()
        info["pinned_versions"] = [m.version for m in self.manager.pinned if m.name == name]
        info["traffic"] = self.manager.traffic.describe().get(name)
        return info

    async def models(self) -> Response:
        return _json(orjson.dumps({"models": [self._model_info(n) for n in self.manager.names],
                                   "state": self.manager.state}))

    async def model(self, name: str) -> Response:
        try:
            return _json(orjson.dumps(self._model_info(name)))
        except TabserveError as exc:
            return error_response(exc)


def build_v1_router(ep: V1Endpoints) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["v1 (seed-compatible)"])
    router.add_api_route("/predict", ep.predict, methods=["POST"], summary="Predict one row",
                         response_model=v1.PredictResponse, responses=_ERRORS,
                         openapi_extra=body_doc(v1.PredictRequest))
    router.add_api_route("/predict/batch", ep.predict_batch, methods=["POST"], summary="Predict many rows",
                         response_model=v1.BatchResponse, responses=_ERRORS,
                         openapi_extra=body_doc(v1.BatchRequest))
    router.add_api_route("/predict/health", ep.health, methods=["GET"], summary="Is the model loaded?",
                         response_model=v1.HealthResponse)
    router.add_api_route("/models", ep.models, methods=["GET"], summary="Served models and their manifests")
    router.add_api_route("/models/{name}", ep.model, methods=["GET"], summary="One model's manifest",
                         responses={404: {"model": v1.ErrorResponse}})
    for suffix, single, version in (("/predict", True, False), ("/predict/batch", False, False),
                                    ("/versions/{version}/predict", True, True),
                                    ("/versions/{version}/predict/batch", False, True)):
        handler = ((ep.predict_version if version else ep.predict_named) if single
                   else (ep.predict_batch_version if version else ep.predict_batch_named))
        what = "one row" if single else "many rows"
        router.add_api_route("/models/{name}" + suffix, handler, methods=["POST"],
                             summary=f"Predict {what} with {'a pinned version of ' if version else ''}a named model",
                             response_model=v1.PredictResponse if single else v1.BatchResponse,
                             responses={**_ERRORS, 404: {"model": v1.ErrorResponse,
                                                         "description": "Unknown model or version"}},
                             openapi_extra=body_doc(v1.PredictRequest if single else v1.BatchRequest))
    return router
