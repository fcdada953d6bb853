"""``inference.GRPCInferenceService``: ModelInfer through the data plane with the gRPC codec; health, metadata
and the repository extension through the same served models as REST v2.

Every call passes the same door as HTTP (api/guard.py): the API key from the ``authorization: Bearer KEY`` or
``x-api-key`` metadata (the ``admin`` scope for repository load/unload), then the rate limit (one unit at the
door, a prediction's other rows once decoded). ServerLive and ServerReady are probes: never authenticated or
limited. Each call gets a request id (``x-request-id`` metadata accepted, and sent back), one access-log line
and the request metrics, with the method path as the route and the HTTP status REST would have answered.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

import grpc
import orjson
from starlette.types import Message, Scope

from tabserve import __version__
from tabserve.api.auth import SCOPE_KEY, KeyRing, presented_key
from tabserve.api.dataplane import DataPlane
from tabserve.api.guard import Admission
from tabserve.api.ratelimit import CLIENT
from tabserve.api.selection import select_model
from tabserve.errors import InvalidInput, ModelNotReady, NotAuthenticated, PermissionDenied, TabserveError
from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.codec import GrpcCodec, GrpcError, grpc_error, infer_target
from tabserve.observability.logging import get_logger
from tabserve.observability.requests import REQUEST_START, WHOLE_BODY, AccessLog, stamp
from tabserve.protocol import v2
from tabserve.settings import Settings

SERVICE = "inference.GRPCInferenceService"
PROBES = frozenset({"ServerLive", "ServerReady"})
ADMIN = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})
PEER = "tabserve.grpc.context"  # scope key: the call's context, whose peer() is the client address

Handler = Callable[[Any, Scope], Awaitable[Any]]


class GrpcAccessLog:
    """The access log's JSON line for a gRPC call, formatted by one bytes template as REST's lines are (an
    orjson dict and an isoformat per call cost ~4% of a one-row call), written through REST's ``AccessLog``
    (the same buffered stdout, flushed a moment later)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._log = AccessLog(stream)
        self._quoted: dict[str, bytes] = {}  # method paths, model names and versions as JSON strings

    def call(self, request_id: str, route: str, status: int, model: str | None, version: str | None,
             seconds: float) -> None:
        second, micros = stamp()
        # the request id is generated, or an incoming one of _valid_id's characters: no escaping needed
        self._log.write_line(_CALL_LINE % (request_id.encode(), self._json(route), status, self._json(model),
                                           self._json(version), seconds * 1000, second, micros))

    def _json(self, value: str | None) -> bytes:
        if value is None:
            return b"null"
        quoted = self._quoted.get(value)
        if quoted is None:
            quoted = orjson.dumps(value)
            if len(self._quoted) < 4096:  # the service's methods and the models' names: a few
                self._quoted[value] = quoted
        return quoted

    def flush(self) -> None:
        self._log.flush()


_CALL_LINE = (b'{"request_id":"%b","method":"GRPC","route":%b,"status":%d,"model":%b,"model_version":%b,'
              b'"latency_ms":%.3f,"protocol":"grpc","event":"request","level":"info","timestamp":"%b.%06dZ"}\n')


class InferenceServicer:
    def __init__(self, plane: DataPlane, settings: Settings, admission: Admission, *, metrics: Any = None,
                 access_log: GrpcAccessLog | None = None) -> None:
        self.plane = plane
        self.models = plane.models
        self.settings = settings
        self.codec = GrpcCodec(plane.options)
        self.keys = KeyRing(admission.keys) if admission.keys else None
        self.default_quota = admission.quota
        self.key_quotas = admission.key_quotas
        # As the REST admin gate: load/unload only with admin_routes on, or auto with API keys configured.
        self.admin_routes = settings.admin_routes if settings.admin_routes != "auto" else \
            ("on" if admission.keys else "auto")
        self.metrics = metrics
        self.access_log = access_log
        self.log = get_logger("tabserve.grpc")
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()

    # -- the generic handler -------------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        """ModelInfer takes and returns bytes (the codec parses them, off the loop when large); the rest use
        the generated messages."""
        table: dict[str, tuple[Handler, Any, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": (self.model_infer, None, None),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
            "RepositoryModelLoad": (self.repository_load, pb.RepositoryModelLoadRequest,
                                    pb.RepositoryModelLoadResponse),
            "RepositoryModelUnload": (self.repository_unload, pb.RepositoryModelUnloadRequest,
                                      pb.RepositoryModelUnloadResponse),
        }
        methods = {}
        for name, (fn, request_type, response_type) in table.items():
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._call(name, fn),
                request_deserializer=request_type.FromString if request_type else None,
                response_serializer=response_type.SerializeToString if response_type else None)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _call(self, method: str, fn: Handler) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        route = f"/{SERVICE}/{method}"
        # Without API keys, a rate limit or an admin method, the door has nothing to check: no coroutine for it.
        admits = method not in PROBES and (self.keys is not None or method in ADMIN
                                           or (self.default_quota is not None and self.plane.limiter is not None))

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            scope = self._scope(route, context, t0)
            state = scope["state"]
            try:
                if admits:
                    await self._admit(scope, method)
                result = await fn(request, scope)
            except TabserveError as exc:
                result = self.plane.fail(self.codec, scope, exc)
            except asyncio.CancelledError:  # the client went away, or the shutdown grace ran out
                self._record(scope, route, 499, t0)
                raise
            except Exception as exc:  # a bug of ours: INTERNAL with the request id, the traceback logged
                self.log.error("grpc_call_failed", request_id=state["request_id"], method=method,
                               error=repr(exc), exc_info=exc)
                result = grpc_error(TabserveError(f"internal error ({type(exc).__name__})"), state["request_id"])
            if isinstance(result, GrpcError):
                self._record(scope, route, result.status_code, t0)
                context.set_trailing_metadata(tuple(result.trailers))
                await context.abort(grpc.StatusCode[result.code], result.details)
            self._record(scope, route, 200, t0)
            # In the trailers, which travel with the status: initial metadata would cost its own send (measured:
            # 18% of a one-row call's server time at c32).
            variant = state.get("variant")
            context.set_trailing_metadata((("x-request-id", state["request_id"]),) if variant is None else
                                          (("x-request-id", state["request_id"]), ("x-tabserve-variant", variant)))
            return result.body if method == "ModelInfer" else result

        return call

    def _scope(self, route: str, context: grpc.aio.ServicerContext, t0: float) -> Scope:
        """The call as the data plane, the limiter and the traffic router read a request: metadata as headers."""
        headers = [(k, v) for k, v in context.raw_metadata() if k[-4:] != b"-bin"]  # grpc/http2.py's context
        incoming = next((v for k, v in headers if k == b"x-request-id"), None)
        request_id = incoming.decode("latin-1") if incoming is not None and _valid_id(incoming) else \
            f"{self._id_prefix}{next(self._ids):016x}"
        return {"type": "grpc", "method": "POST", "path": route, "headers": headers, PEER: context,
                "state": {"request_id": request_id}, REQUEST_START: t0}

    async def _admit(self, scope: Scope, method: str) -> None:
        """The API key, the admin switch and scope, then one unit of the rate limit (as api/guard.py and
        api/admin_gate.py do for HTTP; a browser cannot send native gRPC, so there is no CSRF check)."""
        limiter = self.plane.limiter
        quota = self.default_quota
        identity = None
        if self.keys is not None:
            token = presented_key(scope)
            key = self.keys.find(token) if token is not None else None
            if key is None:
                if quota is not None and limiter is not None:  # guessing keys is rate-limited too
                    await limiter.charge(scope, _address(scope), quota, 1)
                raise NotAuthenticated("missing API key: send the metadata 'authorization: Bearer KEY' or "
                                       "'x-api-key: KEY'" if token is None else "invalid API key")
            scope[SCOPE_KEY] = key
            identity = "key:" + key.name
            quota = self.key_quotas.get(key.name, quota)
        if method in ADMIN:
            if self.admin_routes != "on":
                why = "TABSERVE_ADMIN_ROUTES=off" if self.admin_routes == "off" else "no API keys are configured"
                raise PermissionDenied(f"admin calls are off ({why}): configure API keys with the 'admin' scope "
                                       "(TABSERVE_API_KEYS), or set TABSERVE_ADMIN_ROUTES=on for local use")
            key = scope.get(SCOPE_KEY)
            if key is not None and "admin" not in key.scopes:
                raise PermissionDenied(f"API key {key.name!r} lacks the 'admin' scope that {method} needs")
        if quota is not None and limiter is not None:
            identity = identity or _address(scope)
            await limiter.charge(scope, identity, quota, 1)
            scope[CLIENT] = (identity, quota)

    def _record(self, scope: Scope, route: str, status: int, t0: float) -> None:
        state = scope["state"]
        elapsed = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.request_finished(route, status, state.get("model"), state.get("model_version"),
                                          state.get("variant"), elapsed, "grpc")
        if self.access_log is not None:
            self.access_log.call(state["request_id"], route, status, state.get("model"), state.get("model_version"),
                                 elapsed)

    # -- health and metadata -------------------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, scope: Scope) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, scope: Scope) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.models.ready and not self.models.draining)

    async def server_metadata(self, request: pb.ServerMetadataRequest, scope: Scope) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="tabserve", version=__version__, extensions=list(v2.EXTENSIONS))

    async def model_ready(self, request: pb.ModelReadyRequest, scope: Scope) -> pb.ModelReadyResponse:
        try:
            await select_model(self.models, scope, _name(request.name), request.version or None)
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.models.draining)

    async def model_metadata(self, request: pb.ModelMetadataRequest, scope: Scope) -> pb.ModelMetadataResponse:
        model = await select_model(self.models, scope, _name(request.name), request.version or None)
        meta = self.codec.signature(model).metadata
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

    # -- inference -----------------------------------------------------------------------------------------

    def model_infer(self, raw: bytes, scope: Scope) -> Awaitable[Any]:
        """The data plane's coroutine itself (one frame less a call); a name that cannot be read raises here."""
        name, version = infer_target(raw)
        scope["tabserve.grpc.target"] = (name, version)
        options = self.plane.options
        if len(raw) <= options.inline_max_bytes and len(raw) <= options.max_body_bytes:
            # Whole already, and too small for the body budget (as REST's wire lane hands a small body over):
            # no lease, no receive loop.
            scope[WHOLE_BODY] = raw
            return self.plane.infer(self.codec, scope, _no_receive, _name(name), version or None)
        scope["headers"].append((b"content-length", str(len(raw)).encode()))
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return self.plane.infer(self.codec, scope, receive, _name(name), version or None)

    # -- repository extension ------------------------------------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest, scope: Scope) -> pb.RepositoryIndexResponse:
        entries = self.models.repository()
        if request.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**e) for e in entries])

    async def repository_load(self, request: pb.RepositoryModelLoadRequest,
                              scope: Scope) -> pb.RepositoryModelLoadResponse:
        name = _repository_name(request)
        overrides = [k for k in request.parameters if k == "config" or k.startswith("file:")]
        if overrides:
            raise InvalidInput(f"tabserve loads a model from its bundle; {', '.join(overrides)} overrides are "
                               "not supported")
        self.models.check_known(name)
        model = await self.models.load_again(name, self.settings.resolved_model_uri)
        return pb.RepositoryModelLoadResponse(model_name=model.name, isLoaded=True)

    async def repository_unload(self, request: pb.RepositoryModelUnloadRequest,
                                scope: Scope) -> pb.RepositoryModelUnloadResponse:
        name, _ = await self.models.unload(_repository_name(request))
        return pb.RepositoryModelUnloadResponse(model_name=name, isUnloaded=True)


async def _no_receive() -> Message:
    raise AssertionError("the data plane reads no body it was handed whole")


def _name(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is empty: name the model (ServerMetadata and RepositoryIndex list them)")
    return name


def _repository_name(request: Any) -> str:
    """Triton sends model_name (field 2); KServe's model_name is field 1, Triton's repository_name."""
    name = request.model_name or request.repository_name
    if not name:
        raise InvalidInput("model_name is empty: name the model to load or unload")
    return name


def _address(scope: Scope) -> str:
    """The client's address, asked of gRPC only when a rate limit needs it."""
    peer = scope[PEER].peer() or ""  # "ipv4:127.0.0.1:51000", "ipv6:[::1]:51000"
    return "ip:" + (peer.partition(":")[2].rpartition(":")[0].strip("[]") or "unknown")


def _valid_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and all(c.isalnum() or c in "._:/=+-" for c in value.decode("latin-1"))


__all__ = ["ADMIN", "PROBES", "SERVICE", "GrpcAccessLog", "InferenceServicer"]
