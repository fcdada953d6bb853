"""``create_app(settings)`` builds the whole server; ``create_router`` mounts tabserve into your own app."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from tabserve import __version__
from tabserve.api import guard
from tabserve.api import openapi_model as model_openapi
from tabserve.api.admin import AdminEndpoints
from tabserve.api.body import BodyBudget
from tabserve.api.dataplane import DataPlane, PlaneOptions
from tabserve.api.errors import error_response, v2_error_response
from tabserve.api.explain import ExplainEndpoints, ExplainService
from tabserve.api.exposure import ModelRoots, PathMask
from tabserve.api.health import HealthEndpoints
from tabserve.api.invocations import InvocationsEndpoints
from tabserve.api.lifecycle import drain_on_sigterm
from tabserve.api.proxies import ForwardedFor, parse_trusted_proxies
from tabserve.api.routes import FastDispatch, FastLane, Route, RouteTable
from tabserve.api.v1 import V1Endpoints
from tabserve.api.v2 import V2Endpoints
from tabserve.api.wire import Wire
from tabserve.core.model import Model
from tabserve.errors import TabserveError
from tabserve.grpc import start_grpc_server
from tabserve.loop.routes import LoopEndpoints
from tabserve.loop.service import loop_service
from tabserve.observability.logging import configure_logging, get_logger
from tabserve.observability.metrics import CONTENT_TYPE, METRICS_PATH, Metrics
from tabserve.observability.multiproc import join_launcher_workers
from tabserve.observability.payload import PayloadSink
from tabserve.observability.requests import RequestContextMiddleware
from tabserve.serving.facade import ServedModels
from tabserve.serving.manager import ModelManager
from tabserve.serving.traffic import TrafficPolicy
from tabserve.settings import Settings


def create_app(settings: Settings | None = None, *, model: Model | None = None,
               payload: PayloadSink | None = None) -> FastAPI:
    """The tabserve server. With ``model``, serve that loaded model; else load ``settings``' model at start-up
    (in the background: liveness answers at once, readiness once the model is warm). ``payload``: where each
    answered prediction is offered (default: as the settings say)."""
    settings = settings or Settings()
    admission = guard.Admission.from_settings(settings)  # keys, limits, CORS: refuse a bad config before all
    proxies = parse_trusted_proxies(settings.trusted_proxies)
    roots = ModelRoots.from_settings(settings)
    configure_logging(settings.log_level)
    # Always there, so that admission control can call metrics.rate_limited() / shed() unconditionally; with
    # metrics off nothing reads it and requests and batches are not recorded.
    metrics = Metrics.from_settings(settings)
    manager = ModelManager.from_settings(settings, model, observer=metrics if settings.metrics else None)
    for name, uri in settings.models.items():
        manager.add(name, uri)
    models = ServedModels(manager)
    policies = {name: TrafficPolicy.parse(raw, name) for name, raw in settings.traffic.items()}
    log = get_logger("tabserve.server")

    def policy_refused(name: str, exc: TabserveError) -> None:
        log.error("traffic_policy_refused", model=name, error=exc.message)

    explainer = ExplainService(settings.explain_workers, settings.explain_max_pending, settings.explain_max_rows)
    budget = BodyBudget.from_settings(settings, on_shed=metrics.shed)
    limiter = guard.rate_limiter(admission, metrics)
    loop = loop_service(settings, metrics.registry)  # the payload log and quality, when PAYLOAD_LOG_DIR is set
    plane = DataPlane(models, PlaneOptions.from_settings(settings), budget, limiter=limiter,
                      payload=payload if payload is not None else loop.log if loop else None, explainer=explainer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(models.start(settings.resolved_model_uri, policies, settings.poll_interval_s,
                                                policy_refused))
        log.info("server_started", version=__version__, model=settings.resolved_model_uri,
                 models=settings.models or None, poll_interval_s=settings.poll_interval_s)
        if not settings.api_keys:  # e.g. deploy/k8s before its optional Secret exists: say that anyone may call
            log.warning("api_keys_off", effect="no API key is asked: every client may predict; set "
                        "TABSERVE_API_KEYS (tabserve keys new) to require keys")
        # gRPC on the same data plane; started before the drain handler so that it stops with uvicorn's drain
        grpc_server = None if settings.grpc_port is None else \
            await start_grpc_server(settings, plane, admission, metrics=metrics)
        restore_signals = drain_on_sigterm(models, settings.shutdown_delay_s)
        if loop is not None:
            loop.start()
        try:
            yield
        finally:
            restore_signals()
            if grpc_server is not None:
                await grpc_server.stop()  # begun at SIGTERM with HTTP's drain: in-flight calls had the same grace
            if not task.done():
                task.cancel()
            models.close()
            if loop is not None:
                loop.close()  # publishes what the payload log holds
            explainer.close()
            metrics.close()
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()  # the access log's last lines

    table = RouteTable([
        *HealthEndpoints(models).routes(),
        *V1Endpoints(plane).routes(),
        *V2Endpoints(plane, settings).routes(),
        *InvocationsEndpoints(plane).routes(),
        *AdminEndpoints(models, settings, roots).routes(),
        *ExplainEndpoints(plane, settings, explainer).routes(),
        *LoopEndpoints(loop, settings, lambda name: models.current() if name is None else
                       models.route(name, None, lambda _header: None)[0], lambda: models.names).routes(),
        *_server_routes(settings, metrics),
    ], public_prefixes=("/static-offline-docs/",))

    def middleware(app: ASGIApp) -> ASGIApp:
        """tabserve's own layers around FastAPI's, outermost first: forwarded client (the access log and the
        rate limit both see it), request id + access log + metrics, path masking, CORS + guard, and the fast
        dispatch of the prediction routes, ahead of FastAPI's own middleware and router."""
        app = dispatch = FastDispatch(app, table)
        app = guard.wrap(app, admission, limiter, table.access, metrics)
        direct = app is dispatch  # no guard nor CORS: the request context answers the fast routes itself
        app = mask = PathMask(app, replacements=roots.replacements(settings))  # HOME/..., not absolute paths
        app = context = RequestContextMiddleware(app, access_log=settings.access_log,
                                                 metrics=metrics if settings.metrics else None,
                                                 lane=FastLane(dispatch, mask.mask_response) if direct else None)
        if direct and not proxies and settings.wire_lane:  # the connection may answer the fast routes itself
            server.state.wire = Wire(context, server, min(settings.inline_max_bytes, settings.max_body_bytes))
        return ForwardedFor(app, trusted=proxies) if proxies else app

    app = server = FastAPIOffline(
        title="tabserve",
        version=__version__,
        description="Tabular model serving: ONNX + onnxruntime behind a simple v1 JSON API and the Open "
                    "Inference Protocol v2 (KServe, Triton).",
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.models = models
    app.state.routes = table
    app.state.settings = settings
    app.state.metrics = metrics
    model_openapi.install(app, models, table, settings)  # request schemas and examples from the model
    app.add_exception_handler(TabserveError, _refusal)  # what a route's dependency (the admin gate) raises
    app.__class__ = TabserveServer  # FastAPIOffline builds a FastAPI; this one only reorders its layers
    app.state.middleware = middleware
    app._unmounted = lambda: table.mount(app, settings)  # type: ignore[attr-defined]
    return app


def _server_routes(settings: Settings, metrics: Metrics) -> list[Route]:
    """The root, the metrics and FastAPI's own documentation pages (declared for their access scope)."""
    async def root() -> dict:
        return {"name": "tabserve", "version": __version__, "docs": "/docs", "redoc": "/redoc",
                "predict": "/api/v1/predict", "v2": "/v2", "ready": "/readyz"}

    def prometheus_metrics() -> Response:  # a plain def: collecting reads files, so off the event loop
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    hidden = {"include_in_schema": False}
    routes = [Route("GET", "/", "public", root, doc=hidden)]
    if settings.metrics:
        routes.append(Route("GET", METRICS_PATH, "probe", prometheus_metrics, doc=hidden))
    routes += [Route("GET", path, "public", None) for path in
               ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")]
    return routes


class TabserveServer(FastAPI):
    """FastAPI with tabserve's middleware outside FastAPI's own (``ServerErrorMiddleware``, the exception
    handlers, the router), not inside them as ``add_middleware`` puts it, so that the fast dispatch answers
    prediction routes before any FastAPI layer runs. FastAPI's per-request check for OpenTelemetry (~10% of a
    one-row request: it reads the environment and the global providers) is made once: when a tracer or meter
    provider is configured before the first request, FastAPI instruments every request as before."""

    _direct_http: bool | None = None

    # FastAPI's routes (the route table's, for its router and the OpenAPI document) are built at their first use:
    # ~0.1 s of pydantic work per start (response models, dependencies) that the prediction routes, answered by
    # the fast dispatch, never need, so the cold start does not wait for it. The first request FastAPI serves (a
    # probe, /docs, an admin route), ``app.routes`` and ``app.openapi()`` build them, once.
    _unmounted: Callable[[], None] | None = None
    _routes_lock = threading.Lock()

    def mount_routes(self) -> None:
        if self._unmounted is None:
            return
        with self._routes_lock:
            mount, self._unmounted = self._unmounted, None
            if mount is not None:
                mount()

    @property
    def routes(self) -> list[BaseRoute]:
        self.mount_routes()
        return super().routes

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        self.mount_routes()
        return super().url_path_for(name, **path_params)

    @property
    def wire(self) -> Wire | None:
        """The wire lane (api/wire.py) for this app's connections, once its layers are built and known to be
        answered directly (no OpenTelemetry instrumentation, no ``root_path``)."""
        if not self._direct_http or self.root_path:
            return None
        return getattr(self.state, "wire", None)

    def build_middleware_stack(self) -> ASGIApp:
        return self.state.middleware(_RoutesAtFirstUse(super().build_middleware_stack(), self.mount_routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path:
            direct = self._direct_http
            if direct is None:
                telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.16x
                direct = self._direct_http = telemetry is None or not telemetry.enabled()
            if direct:
                scope["app"] = self
                stack = self.middleware_stack
                if stack is None:
                    stack = self.middleware_stack = self.build_middleware_stack()
                await stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class _RoutesAtFirstUse:
    """FastAPI's own stack, its routes built before the first request it serves (not at the lifespan's start:
    that runs before the server listens)."""

    def __init__(self, app: ASGIApp, mount: Callable[[], None]) -> None:
        self.app = app
        self.mount: Callable[[], None] | None = mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.mount is not None and scope["type"] != "lifespan":
            self.mount()
            self.mount = None
        await self.app(scope, receive, send)


async def _refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TabserveError)
    return v2_error_response(exc) if request.url.path.startswith("/v2") else error_response(exc)


def create_app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): settings from ``TABSERVE_*`` variables, as ``tabserve serve`` sets them."""
    settings = Settings()
    join_launcher_workers(settings)  # `uvicorn --workers N` or gunicorn: the workers add up their metrics
    return create_app(settings)


def create_router(model: Model, settings: Settings | None = None) -> APIRouter:
    """tabserve's v1 routes (predict, batch, health, models) serving ``model``, to include in your own app:

    ``app.include_router(tabserve.create_router(tabserve.load(path)), prefix="/ml")``
    """
    settings = settings or Settings()
    models = ServedModels(ModelManager.from_settings(settings, model))
    plane = DataPlane(models, PlaneOptions.from_settings(settings), BodyBudget.from_settings(settings))
    router = APIRouter()
    for r in V1Endpoints(plane).routes():
        router.add_api_route(r.path, r.endpoint, methods=[r.method], **r.doc)  # type: ignore[arg-type]
    return router
