"""Seed-compatible routes: ``/api/v1/predict``, ``/predict/batch``, ``/predict/health``, ``/models``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tabserve.api.body import read_body
from tabserve.api.errors import error_response
from tabserve.core.model import Model
from tabserve.errors import ModelNotFound, TabserveError
from tabserve.observability.requests import REQUEST_START
from tabserve.protocol import v1
from tabserve.serving.manager import ModelManager
from tabserve.settings import Settings

_ERRORS = {422: {"model": v1.ErrorResponse, "description": "Invalid input: the message names row, feature, limit"},
           413: {"model": v1.ErrorResponse, "description": "Body over the size limit"},
           503: {"model": v1.ErrorResponse, "description": "No model is ready yet"}}


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _body_doc(model: type) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}


class V1Endpoints:
    """Handlers bound to one manager and settings; scoring is inline for small bodies, threaded for large."""

    def __init__(self, manager: ModelManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings

    def score_single(self, model: Model, body: bytes, t0: float) -> bytes:
        x = model.schema.row(v1.single_data(v1.decode_object(body)))
        warnings = model.schema.check_ranges(x, self.settings.range_policy, single=True)
        pred = model.run(x)
        return v1.encode_single(model, pred, warnings, t0, time.perf_counter())

    def score_batch(self, model: Model, body: bytes, t0: float) -> bytes:
        field, rows = v1.batch_field(v1.decode_object(body))
        limit = self.settings.max_batch_rows
        x = model.schema.rows(rows, max_rows=limit) if field == "data" else model.schema.records(rows, max_rows=limit)
        warnings = model.schema.check_ranges(x, self.settings.range_policy, single=False)
        pred = model.run(x)
        return v1.encode_batch(model, pred, warnings, t0, time.perf_counter())

    async def _handle(self, request: Request, score: Callable[[Model, bytes, float], bytes]) -> Response:
        t0 = request.scope.get(REQUEST_START) or time.perf_counter()
        try:
            body = await read_body(request, self.settings.max_body_bytes)
            model = self.manager.current()
            state = request.scope.setdefault("state", {})
            state["model"], state["model_version"] = model.name, model.version
            if len(body) <= self.settings.inline_max_bytes:
                # ~10 µs of work: cheaper on the loop than the ~50 µs of a thread hand-off.
                out = score(model, body, t0)
            else:
                out = await asyncio.get_running_loop().run_in_executor(self.manager.executor, score, model, body, t0)
        except TabserveError as exc:
            return error_response(exc)
        return _json(out)

    async def predict(self, request: Request) -> Response:
        return await self._handle(request, self.score_single)

    async def predict_batch(self, request: Request) -> Response:
        return await self._handle(request, self.score_batch)

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

    def _model_info(self, model: Model) -> dict:
        info = model.manifest.model_dump(mode="json")
        info["serving"] = {"state": "ready", "load_ms": round(model.load_seconds * 1000, 3),
                           "path": str(model.bundle.path)}
        return info

    async def models(self) -> Response:
        model = self.manager.model
        return _json(orjson.dumps({"models": [self._model_info(model)] if model else [],
                                   "state": self.manager.state}))

    async def model(self, name: str) -> Response:
        model = self.manager.model
        if model is None or model.name != name:
            known = f"; serving: {model.name!r}" if model else "; no model is loaded"
            return error_response(ModelNotFound(f"unknown model {name!r}{known}"))
        return _json(orjson.dumps(self._model_info(model)))


def build_v1_router(manager: ModelManager, settings: Settings) -> APIRouter:
    ep = V1Endpoints(manager, settings)
    router = APIRouter(prefix="/api/v1", tags=["v1 (seed-compatible)"])
    router.add_api_route("/predict", ep.predict, methods=["POST"], summary="Predict one row",
                         response_model=v1.PredictResponse, responses=_ERRORS,
                         openapi_extra=_body_doc(v1.PredictRequest))
    router.add_api_route("/predict/batch", ep.predict_batch, methods=["POST"], summary="Predict many rows",
                         response_model=v1.BatchResponse, responses=_ERRORS,
                         openapi_extra=_body_doc(v1.BatchRequest))
    router.add_api_route("/predict/health", ep.health, methods=["GET"], summary="Is the model loaded?",
                         response_model=v1.HealthResponse)
    router.add_api_route("/models", ep.models, methods=["GET"], summary="Served models and their manifests")
    router.add_api_route("/models/{name}", ep.model, methods=["GET"], summary="One model's manifest",
                         responses={404: {"model": v1.ErrorResponse}})
    return router
