"""The gRPC server beside HTTP: a ``grpc.aio`` server on the app's own event loop, started and stopped by the
app's lifespan (``TABSERVE_GRPC_PORT`` / ``tabserve serve --grpc-port``; off by default).

Messages over ``max_body_bytes`` are refused by gRPC itself (RESOURCE_EXHAUSTED) before any of ours runs;
responses are not capped (``max_batch_rows`` bounds them). On SIGTERM gRPC drains in step with HTTP: when
uvicorn begins its graceful shutdown (after ``shutdown_delay_s``, during which ServerReady answers false and
grpc.health.v1 NOT_SERVING), new calls are refused and calls in flight get ``shutdown_grace_s`` to finish. Under several uvicorn workers
each worker binds the same port (gRPC sets SO_REUSEPORT) and the kernel spreads connections across them.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from tabserve.api.dataplane import DataPlane
from tabserve.api.guard import Admission
from tabserve.errors import ConfigError
from tabserve.grpc.health import ModelHealth
from tabserve.grpc.http2 import Http2Server
from tabserve.grpc.servicer import GrpcAccessLog, InferenceServicer
from tabserve.observability.logging import get_logger
from tabserve.settings import Settings


class GrpcServer:
    """A started server; ``stop`` once (later calls wait for the first)."""

    def __init__(self, server: Http2Server, port: int, grace_s: float, health: ModelHealth) -> None:
        self.server = server
        self.health = health
        self.port = port  # the bound port (a GRPC_PORT of 0 picks a free one)
        self.grace_s = grace_s
        self._stopping: asyncio.Task[None] | None = None
        self._restore_signal: Callable[[], None] = lambda: None

    def begin_stop(self) -> asyncio.Task[None]:
        """Refuse new calls from now on; calls in flight have ``grace_s`` to finish."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        await self.health.shut_down()
        await self.server.stop(self.grace_s)

    async def stop(self) -> None:
        self._restore_signal()
        await self.begin_stop()

    def stop_on_sigterm(self) -> None:
        """Begin the stop when the ASGI server's SIGTERM handler runs. Install it before the app's own drain
        handler (api/lifecycle.py), which calls the one it found after ``shutdown_delay_s``: then this runs
        exactly when uvicorn starts its graceful shutdown. A no-op off the main thread (in-process tests)."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin_stop)
            previous(sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        self._restore_signal = restore


async def start(settings: Settings, plane: DataPlane, admission: Admission, *, metrics: Any = None) -> GrpcServer:
    """Serve ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health`` on
    ``settings.host:settings.grpc_port`` through ``plane`` (the same data plane, limiter and served models as
    HTTP). ``metrics``: the app's ``Metrics``, or None."""
    assert settings.grpc_port is not None
    servicer = InferenceServicer(plane, settings, admission, metrics=metrics if settings.metrics else None,
                                 access_log=GrpcAccessLog() if settings.access_log else None)
    server = Http2Server(max_receive=settings.max_body_bytes, max_concurrent=settings.max_concurrent_requests or None,
                         budget=plane.budget)
    server.add_generic_rpc_handlers((servicer.handler(),))
    health = ModelHealth(plane.models)
    health.serve_on(server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        port = await server.listen(settings.host, settings.grpc_port)
    except OSError as exc:
        raise ConfigError(f"gRPC cannot listen on {host}:{settings.grpc_port}: {exc}; choose another --grpc-port") \
            from None
    health.follow()
    get_logger("tabserve.grpc").info("grpc_started", address=f"{host}:{port}",
                                     max_receive_message_bytes=settings.max_body_bytes)
    started = GrpcServer(server, port, settings.shutdown_grace_s, health)
    started.stop_on_sigterm()
    return started
