"""Running the app under uvicorn, with a clean exit status on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import sys
from collections.abc import Iterator

import uvicorn
from uvicorn.supervisors import Multiprocess

from tabserve.api.transport import ClientLimits, configure, protocol_class
from tabserve.observability.logging import uvicorn_log_config
from tabserve.observability.multiproc import prepare_multiprocess_dir, remove_multiprocess_dir
from tabserve.settings import Settings

APP_FACTORY = "tabserve.api.app:create_app_from_env"


BACKLOG_SWEEP_MAX = 10_000  # connections taken from the listen queue at shutdown, at most


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies with 143. A stop asked
    for is a success: finish in-flight requests, then exit 0 (what orchestrators expect).

    Every connection the kernel accepted before the stop is answered: closing the listener resets the ones still
    in its queue, so they are taken first (their requests then finish like the others); the transport answers
    what the grace cuts with 503 (tabserve.api.transport)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._adopt_listen_queue()
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):  # still reading a request head: 503 too
            cut = getattr(connection, "cut", None)
            if cut is not None:
                cut()
        pending = [t for t in self.server_state.tasks if not t.done()]
        if pending:  # the requests cancelled by the grace: let them write their 503 before the loop stops
            await asyncio.wait(pending, timeout=1.0)
        # requests of the wire lane (api/wire.py) are no tasks: one being scored (a batch on a thread) finishes
        deadline = asyncio.get_running_loop().time() + 1.0
        while (any(getattr(c, "wire_running", 0) for c in self.server_state.connections)
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.005)

    async def _adopt_listen_queue(self) -> None:
        loop = asyncio.get_running_loop()
        queued: list[socket.socket] = []
        for server in getattr(self, "servers", []):
            for listener in server.sockets or ():
                queued += _accept_all(listener.fileno())
            server.close()  # no await since the sweep: nothing can join the queue unseen
        for conn in queued:
            await loop.connect_accepted_socket(self._new_protocol, conn, ssl=self.config.ssl)

    def _new_protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state, _loop=asyncio.get_running_loop())

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


def _accept_all(fd: int) -> list[socket.socket]:
    """The connections waiting in a listening socket's queue (the socket stays open: this works on a copy)."""
    listener = socket.socket(fileno=socket.dup(fd))
    accepted: list[socket.socket] = []
    try:
        listener.setblocking(False)
        while len(accepted) < BACKLOG_SWEEP_MAX:
            try:
                conn, _ = listener.accept()
            except ConnectionAbortedError:  # the peer gave up while queued
                continue
            except OSError:  # the queue is empty (EAGAIN), or no descriptor is left
                break
            conn.setblocking(False)
            accepted.append(conn)
    finally:
        listener.close()
    return accepted


def _run(settings: Settings) -> int:
    configure(ClientLimits.from_settings(settings))  # worker processes read the same from TABSERVE_* variables
    config = uvicorn.Config(
        APP_FACTORY, factory=True, host=settings.host, port=settings.port, workers=settings.workers,
        access_log=False, log_level=settings.log_level, lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # in-flight requests' time to finish on SIGTERM
        log_config=uvicorn_log_config(settings.log_level),
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default; the app reads it from TRUSTED_PROXIES only
        proxy_headers=False,
        http=protocol_class(),  # 431/408 for oversized and slow request heads and bodies
        ws="none",  # no route is a WebSocket: not importing the websockets package saves ~25 ms of start
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
