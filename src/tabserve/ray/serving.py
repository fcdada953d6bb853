"""The tabserve server as a Ray Serve deployment: the same ``create_app`` (v1, v2, health, metrics) in every
replica, behind Ray Serve's HTTP proxy, with a fixed number of replicas or autoscaling."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import ray
from ray import serve
from starlette.types import ASGIApp, Receive, Scope, Send

from tabserve.ray.session import ray_init_options
from tabserve.ray.shipping import ShippedBundle
from tabserve.settings import Settings

APP_NAME = "tabserve"
# Ray Serve's default (5 requests in flight per replica) would starve tabserve's micro-batcher, which
# scores the rows of concurrent requests together; the server's own limits (queue size, deadlines) apply.
MAX_ONGOING_REQUESTS = 256


class ReplicaApp:
    """A picklable ASGI app: Ray ships it (settings and bundle bytes) to each replica, where the first ASGI
    event (lifespan start-up, before the replica takes traffic) loads the model and builds ``create_app``."""

    def __init__(self, settings: Settings, bundle: ShippedBundle) -> None:
        self.settings = settings
        self.bundle = bundle
        self._app: ASGIApp | None = None

    @property
    def ready(self) -> bool:
        return self._app is not None and getattr(self._app, "state", None) is not None and \
            self._app.state.manager.model is not None  # type: ignore[attr-defined]

    def build(self) -> ASGIApp:
        from tabserve.api.app import create_app
        from tabserve.core.runtime import RuntimeOptions
        from tabserve.serving.loading import load_and_warm

        root = self.bundle.unpack()  # kept for the replica's life: the server reads its manifest path
        model = load_and_warm(root, RuntimeOptions.from_settings(self.settings))
        # This exact version, not a registry URI to resolve again (and poll) from every replica.
        update: dict[str, Any] = {"model_path": root}
        if "model_uri" in Settings.model_fields:
            update["model_uri"] = None
        return create_app(self.settings.model_copy(update=update), model=model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = self.build()
        await self._app(scope, receive, send)

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "bundle": self.bundle, "_app": None}


def deployment(model: str | os.PathLike[str] | Settings, *, settings: Settings | None = None,
               num_replicas: int = 1, autoscaling_config: dict[str, Any] | None = None,
               ray_actor_options: dict[str, Any] | None = None,
               max_ongoing_requests: int = MAX_ONGOING_REQUESTS, name: str = APP_NAME) -> serve.Application:
    """A bound Ray Serve application serving a bundle (a path, or ``Settings`` whose ``model_path`` is one) with
    tabserve's full HTTP API. ``autoscaling_config`` (e.g. ``{"min_replicas": 1, "max_replicas": 4}``) replaces
    ``num_replicas``. Run it with ``serve.run(app, route_prefix="/")``; the bundle travels with the app, so
    replicas on other machines need not see its folder."""
    if isinstance(model, Settings):
        settings = model
    else:
        settings = (settings or Settings()).model_copy(update={"model_path": Path(model)})
    bundle = ShippedBundle.read(settings.resolved_model_path)
    # Each replica is one process: its metrics are its own (no multiprocess folder), and Ray owns its signals.
    settings = settings.model_copy(update={"workers": 1, "metrics_dir": None})

    @serve.ingress(ReplicaApp(settings, bundle))
    class TabserveReplica:
        def check_health(self) -> None:
            app = getattr(self, "app", None)
            if not isinstance(app, ReplicaApp) or not app.ready:
                raise RuntimeError("the tabserve model is not loaded")

    options: dict[str, Any] = {"name": name, "max_ongoing_requests": max_ongoing_requests,
                               "ray_actor_options": ray_actor_options or {"num_cpus": 1}}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(TabserveReplica, **options).bind()


def run(settings: Settings, *, num_replicas: int = 1, autoscaling: tuple[int, int] | None = None) -> int:
    """``tabserve serve --ray``: start a local Ray instance and serve on settings' host and port until SIGINT or
    SIGTERM."""
    cpus = os.cpu_count() or 1
    most = autoscaling[1] if autoscaling else num_replicas
    # Ray counts logical CPUs: more replicas than cores would wait forever for a CPU to be free.
    actor_cpus = min(1.0, cpus / max(most, 1))
    config = None
    if autoscaling:
        config = {"min_replicas": autoscaling[0], "initial_replicas": autoscaling[0], "max_replicas": autoscaling[1],
                  "target_ongoing_requests": 32}
    app = deployment(settings, num_replicas=num_replicas, autoscaling_config=config,
                     ray_actor_options={"num_cpus": actor_cpus})
    ray.init(**ray_init_options(None))  # a local instance, or the cluster at $RAY_ADDRESS
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        replicas = f"{autoscaling[0]}..{autoscaling[1]} replicas (autoscaling)" if autoscaling else \
            f"{num_replicas} replica(s)"
        print(f"tabserve: serving {settings.resolved_model_path} with Ray Serve on "
              f"http://{settings.host}:{settings.port} ({replicas}); Ctrl-C stops", file=sys.stderr)
        stop.wait()
        print("tabserve: stopping Ray Serve", file=sys.stderr)
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0
