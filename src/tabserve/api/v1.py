"""The original /api/v1/predict contract's routes: ``/api/v1/predict``, ``/predict/batch``, ``/predict/health``,
``/models``."""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve.api.codecs import V1Codec, json_response
from tabserve.api.dataplane import DataPlane
from tabserve.api.errors import error_response
from tabserve.api.openapi import body_doc
from tabserve.api.routes import Route
from tabserve.errors import TabserveError
from tabserve.protocol import v1

_ERRORS = {422: {"model": v1.ErrorResponse, "description": "Invalid input: the message names row, feature, limit"},
           413: {"model": v1.ErrorResponse, "description": "Body over the size limit (after gzip/deflate decoding)"},
           415: {"model": v1.ErrorResponse, "description": "Content-Encoding other than gzip, deflate or identity"},
           429: {"model": v1.ErrorResponse, "description": "Rate limit spent (each row counts); see Retry-After"},
           500: {"model": v1.ErrorResponse, "description": "The model failed on valid rows: the body names the "
                                                           "request id whose log line has the traceback"},
           503: {"model": v1.ErrorResponse, "description": "No model is ready yet, or a pinned version failed "
                                                           "to load"}}
_TAGS = ["v1"]


class V1Endpoints:
    """The v1 routes over the data plane: each prediction route is the plane with the v1 codec."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.models = plane.models
        self.single = V1Codec(plane.options, single=True)
        self.batch = V1Codec(plane.options, single=False)

    async def handle(self, scope: Scope, receive: Receive, single: bool, name: str | None = None,
                     version: str | None = None) -> Response:
        return await self.plane.infer(self.single if single else self.batch, scope, receive, name, version)

    # fast handlers: (scope, receive, path parameters) -> the plane's coroutine (no frame of their own)
    def fast_single(self, scope: Scope, receive: Receive, params: dict[str, str]) -> Awaitable[Response]:
        return self.plane.infer(self.single, scope, receive, params.get("name"), params.get("version"))

    def fast_batch(self, scope: Scope, receive: Receive, params: dict[str, str]) -> Awaitable[Response]:
        return self.plane.infer(self.batch, scope, receive, params.get("name"), params.get("version"))

    # FastAPI endpoints (the OpenAPI schema; the fast dispatch answers first)
    async def predict(self, request: Request) -> Response:
        return await self.handle(request.scope, request.receive, True)

    async def predict_batch(self, request: Request) -> Response:
        return await self.handle(request.scope, request.receive, False)

    async def predict_named(self, request: Request, name: str) -> Response:
        return await self.handle(request.scope, request.receive, True, name)

    async def predict_batch_named(self, request: Request, name: str) -> Response:
        return await self.handle(request.scope, request.receive, False, name)

    async def predict_version(self, request: Request, name: str, version: str) -> Response:
        return await self.handle(request.scope, request.receive, True, name, version)

    async def predict_batch_version(self, request: Request, name: str, version: str) -> Response:
        return await self.handle(request.scope, request.receive, False, name, version)

    async def health(self) -> Response:
        models = self.models
        model = models.model
        failure = models.last_failure
        return json_response(v1.HealthResponse(
            status="healthy" if model else "unhealthy",
            model_loaded=model is not None,
            model_format=v1.model_format(model) if model else v1.MODEL_FORMAT,
            model_name=model.name if model else None,
            model_version=model.version if model else None,
            features_count=model.schema.count if model else None,
            error=failure.message if failure and not model else None,
        ).model_dump_json(exclude_none=True).encode())

    async def list_models(self) -> Response:
        return json_response(orjson.dumps(self.models.models_info()))

    async def model(self, name: str) -> Response:
        try:
            return json_response(orjson.dumps(self.models.model_info(name)))
        except TabserveError as exc:
            return error_response(exc)

    def routes(self) -> list[Route]:
        p = "/api/v1"
        out = [
            Route("POST", p + "/predict", "predict", self.predict, self.fast_single, {
                "summary": "Predict one row", "response_model": v1.PredictResponse, "responses": _ERRORS,
                "openapi_extra": body_doc(v1.PredictRequest), "tags": _TAGS}),
            Route("POST", p + "/predict/batch", "predict", self.predict_batch, self.fast_batch, {
                "summary": "Predict many rows", "response_model": v1.BatchResponse, "responses": _ERRORS,
                "openapi_extra": body_doc(v1.BatchRequest), "tags": _TAGS}),
            Route("GET", p + "/predict/health", "probe", self.health, doc={
                "summary": "Is the model loaded?", "response_model": v1.HealthResponse, "tags": _TAGS}),
            Route("GET", p + "/models", "read", self.list_models, doc={
                "summary": "Served models and their manifests", "tags": _TAGS}),
            Route("GET", p + "/models/{name}", "read", self.model, doc={
                "summary": "One model's manifest", "responses": {404: {"model": v1.ErrorResponse}}, "tags": _TAGS}),
        ]
        for suffix, single, version in (("/predict", True, False), ("/predict/batch", False, False),
                                        ("/versions/{version}/predict", True, True),
                                        ("/versions/{version}/predict/batch", False, True)):
            endpoint = ((self.predict_version if version else self.predict_named) if single
                        else (self.predict_batch_version if version else self.predict_batch_named))
            what = "one row" if single else "many rows"
            out.append(Route("POST", p + "/models/{name}" + suffix, "predict", endpoint,
                             self.fast_single if single else self.fast_batch, {
                "summary": f"Predict {what} with {'a pinned version of ' if version else ''}a named model",
                "response_model": v1.PredictResponse if single else v1.BatchResponse,
                "responses": {**_ERRORS, 404: {"model": v1.ErrorResponse, "description": "Unknown model or version"}},
                "openapi_extra": body_doc(v1.PredictRequest if single else v1.BatchRequest), "tags": _TAGS}))
        return out
