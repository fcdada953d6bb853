"""``create_app(settings)`` builds the whole server; ``create_router`` mounts tabserve into your own app."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.requests import Request
from starlette.responses import Response

from tabserve import __version__
from tabserve.api import guard
from tabserve.api.admin import AdminEndpoints, apply_policy, build_admin_router
from tabserve.api.errors import error_response, v2_error_response
from tabserve.api.explain import ExplainEndpoints, build_explain_router
from tabserve.api.exposure import ModelRoots, PathMask
from tabserve.api.health import build_health_router
from tabserve.api.hotpath import HotPath
from tabserve.api.lifecycle import drain_on_sigterm
from tabserve.api.proxies import ForwardedFor, parse_trusted_proxies
from tabserve.api.v1 import V1Endpoints, build_v1_router
from tabserve.api.v2 import V2Endpoints, build_v2_router
from tabserve.core.model import Model
from tabserve.errors import TabserveError
from tabserve.observability.logging import configure_logging, get_logger
from tabserve.observability.metrics import CONTENT_TYPE, METRICS_PATH, Metrics
from tabserve.observability.multiproc import join_launcher_workers
from tabserve.observability.requests import RequestContextMiddleware
from tabserve.serving.manager import ModelManager
from tabserve.serving.traffic import TrafficPolicy
from tabserve.settings import Settings


def create_app(settings: Settings | None = None, *, model: Model | None = None) -> FastAPI:
    """The tabserve server. With ``model``, serve that loaded model; else load ``settings``' model at start-up
    (in the background: liveness answers at once, readiness once the model is warm)."""
    settings = settings or Settings()
    admission = guard.Admission.from_settings(settings)  # keys, limits, CORS: refuse a bad config before all
    proxies = parse_trusted_proxies(settings.trusted_proxies)
    roots = ModelRoots.from_settings(settings)
    configure_logging(settings.log_level)
    # Always there, so that admission control can call metrics.rate_limited() / shed() unconditionally; with
    # metrics off nothing reads it and requests and batches are not recorded.
    metrics = Metrics.from_settings(settings)
    manager = ModelManager.from_settings(settings, model, observer=metrics if settings.metrics else None)
    if settings.metrics:
        manager.traffic.observer = metrics
    for name, uri in settings.models.items():
        manager.add(name, uri)
    policies = {name: TrafficPolicy.parse(raw, name) for name, raw in settings.traffic.items()}
    log = get_logger("tabserve.server")

    async def start() -> None:
        await manager.load_in_background(settings.resolved_model_uri if manager.model is None else None)
        for name, policy in policies.items():
            try:
                await apply_policy(manager, name, policy)
            except TabserveError as exc:  # e.g. a policy for a model that is not served: say so, keep serving
                log.error("traffic_policy_refused", model=name, error=exc.message)
        if settings.poll_interval_s > 0:
            await manager.poll(settings.poll_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(start())
        log.info("server_started", version=__version__, model=settings.resolved_model_uri,
                 models=settings.models or None, poll_interval_s=settings.poll_interval_s)
        if not settings.api_keys:  # e.g. deploy/k8s before its optional Secret exists: say that anyone may call
            log.warning("api_keys_off", effect="no API key is asked: every client may predict; set "
                        "TABSERVE_API_KEYS (tabserve keys new) to require keys")
        restore_signals = drain_on_sigterm(manager, settings.shutdown_delay_s)
        try:
            yield
        finally:
            restore_signals()
            if not task.done():
                task.cancel()
            manager.close()
            explain.service.close()
            metrics.close()
            with contextlib.suppress(ValueError, OSError):
                sys.stdout.flush()  # the access log's last lines

    app = FastAPIOffline(
        title="tabserve",
        version=__version__,
        description="Tabular model serving: ONNX + onnxruntime behind a seed-compatible v1 API and the Open "
                    "Inference Protocol v2 (KServe, Triton).",
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(build_health_router(manager))
    v1, v2 = V1Endpoints(manager, settings), V2Endpoints(manager, settings)
    app.include_router(build_v1_router(v1))
    app.include_router(build_v2_router(v2))
    app.include_router(build_admin_router(AdminEndpoints(manager, settings, roots)))
    app.add_exception_handler(TabserveError, _refusal)  # what a route's dependency (the admin gate) raises
    explain = ExplainEndpoints(manager, settings)  # its own bounded worker, not the prediction executor
    v2.budget = explain.budget = v1.budget  # one memory budget for every request body the process holds
    v1.budget.on_shed = metrics.shed
    app.include_router(build_explain_router(explain))

    @app.get("/", include_in_schema=False)
    async def root() -> dict:
        return {"name": "tabserve", "version": __version__, "docs": "/docs", "redoc": "/redoc",
                "predict": "/api/v1/predict", "v2": "/v2", "ready": "/readyz"}

    if settings.metrics:
        @app.get(METRICS_PATH, include_in_schema=False)
        def prometheus_metrics() -> Response:  # a plain def: collecting reads files, so off the event loop
            return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.add_middleware(HotPath, v1=v1, v2=v2)
    guard.install(app, admission, (v1, v2, explain), metrics)  # auth, limits, CORS: outside the hot path, when set
    app.add_middleware(PathMask, replacements=roots.replacements(settings))  # HOME/..., not absolute paths
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log,
                       metrics=metrics if settings.metrics else None)
    if proxies:  # outermost: the access log and the rate limit both see the forwarded client
        app.add_middleware(ForwardedFor, trusted=proxies)
    return app


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
    manager = ModelManager.from_settings(settings, model)
    router = APIRouter()
    router.include_router(build_v1_router(V1Endpoints(manager, settings)))
    return router
