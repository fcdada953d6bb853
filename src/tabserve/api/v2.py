"""Open Inference Protocol (v2) routes: health, metadata, infer, Triton's repository and binary tensor extensions.

Status codes: 400 bad request (the message names the input, feature or row), 404 unknown model or version,
413 body over the limit, 503 no model ready (loading, failed or unloaded). Error bodies are ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve import __version__
from tabserve.api.admin_gate import admin_gate
from tabserve.api.body import BodyBudget, decompress_body, header, read_body, receive_body
from tabserve.api.errors import v2_error_response
from tabserve.api.openapi import body_doc
from tabserve.api.ratelimit import RateLimiter
from tabserve.api.selection import select_model, variant_headers
from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
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


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)



class V2Endpoints:
    """Handlers bound to one manager and settings; scoring is inline for small bodies, threaded for large."""

    def __init__(self, manager: ModelManager, settings: Settings) -> None:
        self.manager = manager
        self.settings = settings
        self._signature: v2.Signature | None = None
        self.timeout_s = settings.request_timeout_ms / 1000 or None
        self.limiter: RateLimiter | None = None  # set by create_app when rate limits are on: inference pays rows
        self.budget = BodyBudget.from_settings(settings)  # create_app shares one with v1 and explain

    # -- resolving the model a URL names -------------------------------------------------------------------

    def signature(self, model: Model) -> v2.Signature:
        sig = self._signature
        if sig is None or sig.model is not model:
            sig = self._signature = v2.Signature(model)
        return sig

    async def resolve(self, name: str, version: str | None = None, scope: Scope | None = None) -> Model:
        """The model the URL names (routed by its traffic policy, or the pinned ``version``, loaded on demand);
        else 404 (unknown name or version) or 503 (none ready)."""
        return await select_model(self.manager, scope if scope is not None else {}, name, version)

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
        if self.manager.ready and not self.manager.draining:
            return _json(b'{"ready":true}')
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
        return _json(self.signature(model).metadata_json)

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
        limit = v2.RowLimit(self.settings.max_batch_rows, model.schema.count)
        request = v2.decode_infer_request(body, header_length, limit)
        sig = self.signature(model)
        outputs = sig.select_outputs(request)
        x = model_input(model.schema, sig.input_names, request.inputs, max_rows=self.settings.max_batch_rows)
        return request, outputs, x, model.schema.check_ranges(x, self.settings.range_policy, single=False)

    async def peek(self, scope: Scope, prefix: bytes) -> None:
        """The first MiBs of a large request: one that declares too many rows is refused while it arrives."""
        limit = v2.RowLimit(self.settings.max_batch_rows, 0)
        await asyncio.get_running_loop().run_in_executor(self.manager.executor, v2.check_prefix, prefix,
                                                         header(scope, HEADER_LENGTH_KEY), limit)

    async def handle_infer(self, scope: Scope, receive: Receive, name: str, version: str | None) -> Response:
        """The whole infer request from ASGI primitives: what the hot-path dispatcher and the routes both call."""
        lease = self.budget.lease()
        try:
            limit = self.settings.max_body_bytes
            body = decompress_body(await receive_body(scope, receive, limit, lease, partial(self.peek, scope)),
                                   header(scope, b"content-encoding"), limit, lease)
            model = await self.resolve(name, version, scope)
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
        finally:
            lease.release()
        if version is None:
            self.manager.traffic.shadow(model.name, model, x, pred)
        headers = variant_headers(scope)
        if json_length is None:
            return _json(out, headers=headers)
        return Response(out, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length), **(headers or {})})

    async def infer(self, request: Request, model_name: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, None)

    async def infer_version(self, request: Request, model_name: str, model_version: str) -> Response:
        return await self.handle_infer(request.scope, request.receive, model_name, model_version)

    # -- repository extension ------------------------------------------------------------------------------

    def _entries(self) -> list[dict]:
        entries = []
        names = self.manager.names or ([] if self.manager.unloaded is None else [self.manager.unloaded.name])
        for name in names:
            slot = self.manager.slots.get(name, self.manager.default)
            model, unloaded, failure = slot.model, slot.unloaded, slot.last_failure
            if model is not None:
                entries.append({"name": model.name, "version": model.version, "state": "READY"})
            elif slot.loading:
                entries.append({"name": name, "version": unloaded.version if unloaded else "", "state": "LOADING"})
            elif unloaded is not None:
                reason = f"load failed: {failure.message}" if failure and failure.at > unloaded.at else "unloaded"
                entries.append({"name": unloaded.name, "version": unloaded.version, "state": "UNAVAILABLE",
                                "reason": reason})
            elif failure is not None:
                entries.append({"name": name, "version": failure.version or "", "state": "UNAVAILABLE",
                                "reason": f"load failed: {failure.message}"})
        served = {(e["name"], e["version"]) for e in entries}
        entries += [{"name": m.name, "version": m.version, "state": "READY"} for m in self.manager.pinned
                    if (m.name, m.version) not in served]
        return entries

    async def repository_index(self, request: Request) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
        except TabserveError as exc:
            return v2_error_response(exc)
        entries = self._entries()
        if payload.get("ready") is True:
            entries = [e for e in entries if e["state"] == "READY"]
        return _json(orjson.dumps(entries))

    def _known(self, name: str) -> None:
        known = self.manager.names or ([self.known_name()] if self.known_name() else [])
        if known and name not in known:
            raise ModelNotFound(f"unknown model {quoted(name)}; the repository holds "
                                f"{', '.join(map(repr, known))}")

    async def load(self, request: Request, model_name: str) -> Response:
        try:
            payload = v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            overrides = [k for k in v2.parameters(payload.get("parameters"), "the load request")
                         if k == "config" or k.startswith("file:")]
            if overrides:
                raise InvalidInput(f"tabserve loads a model from its bundle; {', '.join(overrides)} overrides "
                                   "are not supported")
            self._known(model_name)
            model = await self._load(model_name)
        except TabserveError as exc:
            return v2_error_response(exc)
        return _json(orjson.dumps({"name": model.name, "version": model.version, "state": "READY"}))

    async def _load(self, name: str) -> Model:
        """Load ``name`` again from its source (the version its alias or folder points at now)."""
        manager = self.manager
        slot = manager.slots.get(name, manager.default)
        source = slot.uri or str(self.settings.resolved_model_path)
        serving = slot.model
        keeps = f"; version {serving.version!r} is still served" if serving else ""
        loop = asyncio.get_running_loop()
        try:
            if slot is manager.default:
                model = await loop.run_in_executor(manager.loader, manager.load, source)
            else:
                model = await loop.run_in_executor(manager.loader, slot.load)
        except TabserveError as exc:
            raise BundleError(f"loading model {name!r} from {source} failed: {exc.message}{keeps}") from exc
        except Exception as exc:  # the slot keeps the old model on any failure; say what happened
            raise BundleError(f"loading model {name!r} from {source} failed: {exc}{keeps}") from exc
        if model.name != name:
            raise ModelNotFound(f"{source} holds model {model.name!r}, not {name!r}; {model.name!r} is now served")
        return model

    async def unload(self, request: Request, model_name: str) -> Response:
        try:
            v2.decode_object(await read_body(request, self.settings.max_body_bytes), allow_empty=True)
            slot = self.manager.slots.get(model_name)
            if slot is None or slot.model is None:
                known = self.manager.names
                held = f"; the repository holds {', '.join(map(repr, known))}" if known else \
                    "; no model was loaded yet"
                if slot is None or not known:
                    raise ModelNotFound(f"unknown model {quoted(model_name)}{held}")
        except TabserveError as exc:
            return v2_error_response(exc)
        await self.manager.unload_async(model_name)
        unloaded = slot.unloaded
        name, version = (unloaded.name, unloaded.version) if unloaded else (model_name, "")
        return _json(orjson.dumps({"name": name, "version": version, "state": "UNAVAILABLE",
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
    admin = [admin_gate(ep.settings)]  # load/unload change what is served: admin routes
    add("/repository/models/{model_name}/load", ep.load, methods=["POST"], dependencies=admin,
        summary="Load the model again from its bundle; on failure the served version stays",
        response_model=v2_docs.RepositoryModel, responses={400: _ERROR, 404: _ERROR})
    add("/repository/models/{model_name}/unload", ep.unload, methods=["POST"], dependencies=admin,
        summary="Stop serving the model (infer then answers 503)", response_model=v2_docs.RepositoryModel,
        responses={404: _ERROR})
    return router
