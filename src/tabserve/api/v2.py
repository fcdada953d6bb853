"""Open Inference Protocol (v2) routes: health, metadata, infer, Triton's repository and binary tensor extensions.

Status codes: 400 bad request (the message names the input, feature or row), 404 unknown model or version,
413 body over the limit, 503 no model ready (loading, failed or unloaded). Error bodies are ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve import __version__
from tabserve.api.body import decompress_body, header, read_body, receive_body
from tabserve.api.errors import v2_error_response
from tabserve.api.openapi import body_doc
from tabserve.api.ratelimit import RateLimiter
from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.errors import (
    BundleError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    TabserveError,
)
from tabserve.protocol import v2, v2_docs
from tabserve.protocol.tensors import HEADER_LENGTH
from tabserve.protocol.v2_inputs import model_input
from tabserve.serving.batcher import rows_of
from tabserve.serving.manager import ModelManager
from tabserve.settings import Settings

_ERROR = {"model": v2_docs.ErrorBody}
_INFER_ERRORS = {400: {**_ERROR, "description": "Invalid request: the message names the input, feature or row"},
                 404: {**_ERROR, "description": "Unknown model or version"},
                 413: {**_ERROR, "description": "Body over the size limit (after gzip/deflate decoding)"},
                 429: {**_ERROR, "description": "Rate limit spent (each row counts); see Retry-After"},
                 503: {**_ERROR, "description": "The model is not ready (loading, failed or unloaded)"}}
_MODEL_ERRORS = {404: _INFER_ERRORS[404], 503: _INFER_ERRORS[503]}
HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()
_SERVER_METADATA = orjson.dumps(v2.server_metadata(__version__))


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")



class V2Endpoints:
    """Handlers bound to one manager and settings; scoring is inline for small bodies, threaded for large."""

    def __init__(self, manager: ModelManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings
        self._signature: v2.Signature | None = None
        self.timeout_s = settings.request_timeout_ms / 1000 or None
        self.limiter: RateLimiter | None = None  # set by create_app when rate limits are on: inference pays rows

    # -- resolving the model a URL names -------------------------------------------------------------------

    def signature(self, model: Model) -> v2.Signature:
        sig = self._signature
        if sig is None or sig.model is not model:
            sig = self._signature = v2.Signature(model)
        return sig

    def resolve(self, name: str, version: str | None = None) -> Model:
        """The served model if the URL names it; else 404 (another name or version) or 503 (none ready)."""
        model = self.manager.model
        if model is None:
            known = self.known_name()
            if known is not None and known != name:
                raise ModelNotFound(f"unknown model {name!r}; this server serves {known!r}")
            model = self.manager.current()  # raises ModelNotReady, saying why (unless it just became ready)
        if name != model.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {model.name!r}")
        if version is not None and version != model.version:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; the served version is "
                                f"{model.version!r}")
        return model

    def known_name(self) -> str | None:
        model = self.manager.model
        if model is not None:
            return model.name
        return self.manager.unloaded.name if self.manager.unloaded else None

    # -- health and metadata -------------------------------------------------------------------------------

    async def server_metadata(self) -> Response:
        return _json(_SERVER_METADATA)

    async def live(self) -> Response:
        return _json(b'{"live":true}')

    async def ready(self) -> Response:
        if self.manager.model is not None and not self.manager.draining:
            return _json(b'{"ready":true}')
        return self._not_ready({"ready": False})

    async def model_metadata(self, model_name: str) -> Response:
        return self._metadata(model_name, None)

    async def model_metadata_version(self, model_name: str, model_version: str) -> Response:
        return self._metadata(model_name, model_version)

    def _metadata(self, name: str, version: str | None) -> Response:
        try:
            model = self.resolve(name, version)
        except TabserveError as exc:
            return v2_error_response(exc)
        return _json(self.signature(model).metadata_json)

    async def model_ready(self, model_name: str) -> Response:
        return self._model_ready(model_name, None)

    async def model_ready_version(self, model_name: str, model_version: str) -> Response:
        return self._model_ready(model_name, model_version)

    def _model_ready(self, name: str, version: str | None) -> Response:
        try:
            self.resolve(name, version)
        except ModelNotReady:
            return self._not_ready({"name": name, "ready": False})
        except TabserveError as exc:
            return v2_error_response(exc)
        if self.manager.draining:
            return self._not_ready({"name": name, "ready": False})
        return _json(orjson.dumps({"name": name, "ready": True}))

    def _not_ready(self, body: dict) -> Response:
        if self.manager.draining:
            body["error"] = "the server is shutting down; in-flight requests finish, new ones go elsewhere"
        try:
            self.manager.current()
        except ModelNotReady as exc:
            body["error"] = exc.message
        return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                        headers={"Retry-After": "1"})

    # -- inference -----------------------------------------------------------------------------------------

    def decode(self, model: Model, body: bytes, header_length: str | None) -> tuple[Any, Any, ModelInput, list[str]]:
        request = v2.decode_infer_request(body, header_length)
        sig = self.signature(model)
        outputs = sig.select_outputs(request)
        x = model_input(model.schema, sig.input_names, request.inputs, max_rows=self.settings.max_batch_rows)
        return request, outputs, x, model.schema.check_ranges(x, self.settings.range_policy, single=False)

    async def handle_infer(self, scope: Scope, receive: Receive, name: str, version: str | None) -> Response:
        """The whole infer request from ASGI primitives: what the hot-path dispatcher and the routes both call."""
        try:
            limit = self.settings.max_body_bytes
            body = decompress_body(await receive_body(scope, receive, limit), header(scope, b"content-encoding"),
                                   limit)
            model = self.resolve(name, version)
            state = scope.setdefault("state", {})
            state["model"], state["model_version"] = model.name, model.version
            header_length = header(scope, HEADER_LENGTH_KEY)
            batcher = self.manager.batcher(model)
            pred = None
            if len(body) <= self.settings.inline_max_bytes:
                request, outputs, x, warnings = self.decode(model, body, header_length)
            else:  # parsing and checking thousands of rows would hold up every other request
                scores_now = self.limiter is None  # rows are charged before they are scored

                def work() -> tuple[Any, Any, ModelInput, list[str], Prediction | None]:
                    decoded = self.decode(model, body, header_length)
                    return (*decoded, batcher.score_if_alone(decoded[2]) if scores_now else None)

                request, outputs, x, warnings, pred = await asyncio.get_running_loop().run_in_executor(
                    self.manager.executor, work)
            if self.limiter is not None:
                await self.limiter.charge_rows(scope, rows_of(x))
            if pred is None:
                pred = await batcher.predict(x, self.timeout_s)
            out, json_length = v2.encode_infer_response(model, request, outputs, pred, warnings)
        except TabserveError as exc:
            return v2_error_response(exc)
        if json_length is None:
            return _json(out)
        return Response(out, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})

    async def infer(self, request: Request, model_name: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, None)

    async def infer_version(self, request: Request, model_name: str, model_version: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, model_version)

    # -- repository extension ------------------------------------------------------------------------------

    def _entries(self) -> list[dict]:
        model, unloaded, failure = self.manager.model, self.manager.unloaded, self.manager.last_failure
        if model is not None:
            return [{"name": model.name, "version": model.version, "state": "READY"}]
        if unloaded is None:
            return []  # nothing was ever loaded: the model's name is not known yet (GET /readyz says why)
        if self.manager.state == "loading":
            return [{"name": unloaded.name, "version": unloaded.version, "state": "LOADING"}]
        reason = f"load failed: {failure.message}" if failure and failure.at > unloaded.at else "unloaded"
        return [{"name": unloaded.name, "version": unloaded.version, "state": "UNAVAILABLE", "reason": reason}]

    async def repository_index(self, request: Request) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
        except TabserveError as exc:
            return v2_error_response(exc)
        entries = self._entries()
        if payload.get("ready") is True:
            entries = [e for e in entries if e["state"] == "READY"]
        return _json(orjson.dumps(entries))

    async def load(self, request: Request, model_name: str) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            overrides = [k for k in v2.parameters(payload.get("parameters"), "the load request")
                         if k == "config" or k.startswith("file:")]
            if overrides:
                raise InvalidInput(f"tabserve loads a model from its bundle; {', '.join(overrides)} overrides "
                                   "are not supported")
            known = self.known_name()
            if known is not None and known != model_name:
                raise ModelNotFound(f"unknown model {model_name!r}; the repository holds {known!r}")
            model = await self._load(model_name)
        except TabserveError as exc:
            return v2_error_response(exc)
        return _json(orjson.dumps({"name": model.name, "version": model.version, "state": "READY"}))

    async def _load(self, name: str) -> Model:
        source = self.manager.source or str(self.settings.resolved_model_path)
        serving = self.manager.model
        keeps = f"; version {serving.version!r} is still served" if serving else ""
        try:
            model = await asyncio.get_running_loop().run_in_executor(self.manager.executor, self.manager.load,
                                                                     source)
        except TabserveError as exc:
            raise BundleError(f"loading model {name!r} from {source} failed: {exc.message}{keeps}") from exc
        except Exception as exc:  # the manager keeps the old model on any failure; say what happened
            raise BundleError(f"loading model {name!r} from {source} failed: {exc}{keeps}") from exc
        if model.name != name:
            raise ModelNotFound(f"{source} holds model {model.name!r}, not {name!r}; {model.name!r} is now served")
        return model

    async def unload(self, request: Request, model_name: str) -> Response:
        try:
            v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            known = self.known_name()
            if known != model_name:
                held = f"; the repository holds {known!r}" if known else "; no model was loaded yet"
                raise ModelNotFound(f"unknown model {model_name!r}{held}")
        except TabserveError as exc:
            return v2_error_response(exc)
        self.manager.unload()
        unloaded = self.manager.unloaded
        assert unloaded is not None
        return _json(orjson.dumps({"name": unloaded.name, "version": unloaded.version, "state": "UNAVAILABLE",
                                   "reason": "unloaded"}))


def build_v2_router(ep: V2Endpoints) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
    add = router.add_api_route
    add("", ep.server_metadata, methods=["GET"], summary="Server metadata", response_model=v2_docs.ServerMetadata)
    add("/health/live", ep.live, methods=["GET"], summary="Liveness: the process answers")
    add("/health/ready", ep.ready, methods=["GET"], summary="Readiness: 200 when the model is ready, else 503",
        responses={503: {"description": "No model is ready (loading, failed or unloaded)"}})
    for suffix, version in (("", False), ("/versions/{model_version}", True)):
        path = "/models/{model_name}" + suffix
        add(path, ep.model_metadata_version if version else ep.model_metadata, methods=["GET"],
            summary="Model metadata", response_model=v2_docs.ModelMetadata, responses=_MODEL_ERRORS)
        add(path + "/ready", ep.model_ready_version if version else ep.model_ready, methods=["GET"],
            summary="Model readiness: 200 when ready, else 503", responses=_MODEL_ERRORS)
        add(path + "/infer", ep.infer_version if version else ep.infer, methods=["POST"], summary="Inference",
            response_model=v2_docs.InferenceResponse, responses=_INFER_ERRORS,
            openapi_extra=body_doc(v2_docs.InferenceRequest))
    add("/repository/index", ep.repository_index, methods=["POST"], summary="Models in the repository",
        response_model=list[v2_docs.RepositoryModel])
    add("/repository/models/{model_name}/load", ep.load, methods=["POST"],
        summary="Load the model again from its bundle; on failure the served version stays",
        response_model=v2_docs.RepositoryModel, responses={400: _ERROR, 404: _ERROR})
    add("/repository/models/{model_name}/unload", ep.unload, methods=["POST"],
        summary="Stop serving the model (infer then answers 503)", response_model=v2_docs.RepositoryModel,
        responses={404: _ERROR})
    return router
