"""Running the app under uvicorn, with a clean exit status on SIGTERM."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator

import uvicorn
from uvicorn.supervisors import Multiprocess

from tabserve.observability.logging import uvicorn_log_config
from tabserve.observability.multiproc import prepare_multiprocess_dir, remove_multiprocess_dir
from tabserve.settings import Settings

APP_FACTORY = "tabserve.api.app:create_app_from_env"


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies with 143. A stop asked
    for is a success: finish in-flight requests, then exit 0 (what orchestrators expect)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def serve(settings: Settings) -> int:
    """Serve until stopped; settings reach each worker through ``TABSERVE_*`` variables set by the caller."""
    metrics_dir = prepare_multiprocess_dir(settings)  # before any worker exists (or imports prometheus_client)
    try:
        return _run(settings)
    finally:
        remove_multiprocess_dir(settings, metrics_dir)


def _run(settings: Settings) -> int:
    config = uvicorn.Config(
        APP_FACTORY, factory=True, host=settings.host, port=settings.port, workers=settings.workers,
        access_log=False, log_level=settings.log_level, lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # in-flight requests' time to finish on SIGTERM
        log_config=uvicorn_log_config(settings.log_level),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default; the app reads it from TRUSTED_PROXIES only
        proxy_headers=False,
    )
    server = GracefulServer(config)
    if config.workers > 1:
        # uvicorn 0.52 and later start a Server of their own in each worker; before, the supervisor took the
        # function each worker runs (the lowest uvicorn allowed, 0.30, requires it)
        takes_target = "target" in inspect.signature(Multiprocess.__init__).parameters
        target = {"target": server.run} if takes_target else {}
        Multiprocess(config, sockets=[config.bind_socket()], **target).run()
        return 0
    server.run()
    if not server.started:
        print("tabserve: the server did not start (see the log above)", file=sys.stderr)
        return 3
    return 0
