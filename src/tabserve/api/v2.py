"""Open Inference Protocol (v2) routes: health, metadata, infer, Triton's repository and binary tensor extensions.

Status codes: 400 bad request (the message names the input, feature or row), 404 unknown model or version,
413 body over the limit, 500 the model failed on valid rows (the message names the request id), 503 no model
ready (loading, failed, unloaded, or a pinned version that fails to load). Error bodies are ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve import __version__
from tabserve.api.body import read_body
from tabserve.api.codecs import V2Codec, json_response
from tabserve.api.dataplane import DataPlane
from tabserve.api.errors import v2_error_response
from tabserve.api.openapi import body_doc
from tabserve.api.routes import Route
from tabserve.api.selection import select_model
from tabserve.core.model import Model
from tabserve.errors import InvalidInput, ModelNotReady, TabserveError
from tabserve.protocol import v2, v2_docs
from tabserve.settings import Settings

_ERROR = {"model": v2_docs.ErrorBody}
_INFER_ERRORS = {400: {**_ERROR, "description": "Invalid request: the message names the input, feature or row"},
                 404: {**_ERROR, "description": "Unknown model or version"},
                 413: {**_ERROR, "description": "Body over the size limit (after gzip/deflate decoding)"},
                 429: {**_ERROR, "description": "Rate limit spent (each row counts); see Retry-After"},
                 500: {**_ERROR, "description": "The model failed on valid rows (the message names the request id)"},
                 503: {**_ERROR, "description": "The model is not ready (loading, failed or unloaded)"}}
_MODEL_ERRORS = {404: _INFER_ERRORS[404], 503: _INFER_ERRORS[503]}
_SERVER_METADATA = orjson.dumps(v2.server_metadata(__version__))
_TAGS = ["v2 (Open Inference Protocol)"]


class V2Endpoints:
    """The v2 routes: infer is the data plane with the v2 codec; the rest describe and manage models."""

    def __init__(self, plane: DataPlane, settings: Settings) -> None:
        self.plane = plane
        self.models = plane.models
        self.settings = settings
        self.codec = V2Codec(plane.options)

    async def resolve(self, name: str, version: str | None = None, scope: Scope | None = None) -> Model:
        """The model the URL names (routed by its traffic policy, or the pinned ``version``, loaded on demand);
        else 404 (unknown name or version) or 503 (none ready)."""
        return await select_model(self.models, scope if scope is not None else {}, name, version)

    # -- health and metadata -------------------------------------------------------------------------------

    async def server_metadata(self) -> Response:
        return json_response(_SERVER_METADATA)

    async def live(self) -> Response:
        return json_response(b'{"live":true}')

    async def ready(self) -> Response:
        if self.models.ready and not self.models.draining:
            return json_response(b'{"ready":true}')
        return self._not_ready({"ready": False})

    async def model_metadata(self, model_name: str) -> Response:
        return await self._metadata(model_name, None)

    async def model_metadata_version(self, model_name: str, model_version: str) -> Response:
        return await self._metadata(model_name, model_version)

    async def _metadata(self, name: str, version: str | None) -> Response:
        try:
            model = await self.resolve(name, version)
        except TabserveError as exc:
            return v2_error_response(exc)
        return json_response(self.codec.signature(model).metadata_json)

    async def model_ready(self, model_name: str) -> Response:
        return await self._model_ready(model_name, None)

    async def model_ready_version(self, model_name: str, model_version: str) -> Response:
        return await self._model_ready(model_name, model_version)

    async def _model_ready(self, name: str, version: str | None) -> Response:
        try:
            await self.resolve(name, version)
        except ModelNotReady:
            return self._not_ready({"name": name, "ready": False})
        except TabserveError as exc:
            return v2_error_response(exc)
        if self.models.draining:
            return self._not_ready({"name": name, "ready": False})
        return json_response(orjson.dumps({"name": name, "ready": True}))

    def _not_ready(self, body: dict) -> Response:
        if self.models.draining:
            body["error"] = "the server is shutting down; in-flight requests finish, new ones go elsewhere"
        reason = self.models.not_ready_reason()
        if reason is not None:
            body["error"] = reason
        return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                        headers={"Retry-After": "1"})

    # -- inference -----------------------------------------------------------------------------------------

    async def handle_infer(self, scope: Scope, receive: Receive, name: str, version: str | None) -> Response:
        return await self.plane.infer(self.codec, scope, receive, name, version)

    def fast_infer(self, scope: Scope, receive: Receive, params: dict[str, str]) -> Awaitable[Response]:
        return self.plane.infer(self.codec, scope, receive, params["model_name"], params.get("model_version"))

    async def infer(self, request: Request, model_name: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, None)

    async def infer_version(self, request: Request, model_name: str, model_version: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, model_version)

    # -- repository extension ------------------------------------------------------------------------------

    async def repository_index(self, request: Request) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
        except TabserveError as exc:
            return v2_error_response(exc)
        entries = self.models.repository()
        if payload.get("ready") is True:
            entries = [e for e in entries if e["state"] == "READY"]
        return json_response(orjson.dumps(entries))

    async def load(self, request: Request, model_name: str) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            overrides = [k for k in v2.parameters(payload.get("parameters"), "the load request")
                         if k == "config" or k.startswith("file:")]
            if overrides:
                raise InvalidInput(f"tabserve loads a model from its bundle; {', '.join(overrides)} overrides "
                                   "are not supported")
            self.models.check_known(model_name)
            model = await self.models.load_again(model_name, self.settings.resolved_model_path)
        except TabserveError as exc:
            return v2_error_response(exc)
        return json_response(orjson.dumps({"name": model.name, "version": model.version, "state": "READY"}))

    async def unload(self, request: Request, model_name: str) -> Response:
        try:
            v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            name, version = await self.models.unload(model_name)
        except TabserveError as exc:
            return v2_error_response(exc)
        return json_response(orjson.dumps({"name": name, "version": version, "state": "UNAVAILABLE",
                                           "reason": "unloaded"}))

    def routes(self) -> list[Route]:
        out = [
            Route("GET", "/v2", "read", self.server_metadata, doc={
                "summary": "Server metadata", "response_model": v2_docs.ServerMetadata, "tags": _TAGS}),
            Route("GET", "/v2/health/live", "probe", self.live, doc={
                "summary": "Liveness: the process answers", "tags": _TAGS}),
            Route("GET", "/v2/health/ready", "probe", self.ready, doc={
                "summary": "Readiness: 200 when the model is ready, else 503", "tags": _TAGS,
                "responses": {503: {"description": "No model is ready (loading, failed or unloaded)"}}}),
        ]
        for suffix, version in (("", False), ("/versions/{model_version}", True)):
            path = "/v2/models/{model_name}" + suffix
            out += [
                Route("GET", path, "read", self.model_metadata_version if version else self.model_metadata, doc={
                    "summary": "Model metadata", "response_model": v2_docs.ModelMetadata, "responses": _MODEL_ERRORS,
                    "tags": _TAGS}),
                Route("GET", path + "/ready", "read", self.model_ready_version if version else self.model_ready,
                      doc={"summary": "Model readiness: 200 when ready, else 503", "responses": _MODEL_ERRORS,
                               "tags": _TAGS}),
                Route("POST", path + "/infer", "predict", self.infer_version if version else self.infer,
                      self.fast_infer, {"summary": "Inference", "response_model": v2_docs.InferenceResponse,
                                            "responses": _INFER_ERRORS, "tags": _TAGS,
                                            "openapi_extra": body_doc(v2_docs.InferenceRequest)}),
            ]
        out += [
            Route("POST", "/v2/repository/index", "read", self.repository_index, doc={
                "summary": "Models in the repository", "response_model": list[v2_docs.RepositoryModel], "tags": _TAGS}),
            # load/unload change what is served: admin routes
            Route("POST", "/v2/repository/models/{model_name}/load", "admin", self.load, doc={
                "summary": "Load the model again from its bundle; on failure the served version stays",
                "response_model": v2_docs.RepositoryModel, "responses": {400: _ERROR, 404: _ERROR}, "tags": _TAGS}),
            Route("POST", "/v2/repository/models/{model_name}/unload", "admin", self.unload, doc={
                "summary": "Stop serving the model (infer then answers 503)", "response_model": v2_docs.RepositoryModel,
                "responses": {404: _ERROR}, "tags": _TAGS}),
        ]
        return out
