"""The HTTP connection layer under the app: uvicorn's protocols with limits on what a client may hold.

uvicorn reads headers of any size and waits for a slow client forever. These subclasses (for httptools, and
h11 where httptools is missing) answer as a hardened nginx front would:

- headers over ``max_header_bytes`` in total: 431, without reading further (nginx: large_client_header_buffers);
- headers not complete within ``header_timeout_s`` of the connection (or of a keep-alive request's first byte):
  408 (client_header_timeout);
- no body bytes for ``body_timeout_s`` while the app waits for them: 408 (client_body_timeout, idle time between
  reads, not the whole upload); the app's ``receive()`` then sees a disconnect;
- on SIGTERM, a connection that was accepted but has not finished sending its request may still send it (the
  header timeout bounds the wait); one idle between requests is closed after a moment in which bytes already
  on their way are still read; a request that the grace period cuts short is answered with a JSON 503 and
  ``Retry-After``, never uvicorn's plain-text 500.

Each refusal is JSON ``{"error": ...}`` with ``Connection: close``; the connection is then half-closed and its
further input read and dropped for a moment (nginx's lingering close), so the client reads the answer instead
of a reset. Idle keep-alive connections stay governed by uvicorn's ``timeout_keep_alive``.

The limits come from ``Settings`` (``TABSERVE_*`` variables), read once per process: uvicorn builds one protocol
per connection with its own arguments. ``tabserve serve`` uses these classes; with plain uvicorn, pass
``--http tabserve.api.transport:HttpToolsProtocol``.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
from dataclasses import dataclass
from typing import Any

import h11
import orjson
from uvicorn.protocols.http import h11_impl

from tabserve.settings import Settings

try:
    from uvicorn.protocols.http import httptools_impl

    from tabserve.api.wire import Wire, WireCycle
except ImportError:  # httptools is optional in uvicorn; uvicorn[standard] has it
    httptools_impl = None  # type: ignore[assignment]

IDLE, HEAD, BODY = 0, 1, 2  # what a connection is reading
LINGER_S = 2.0  # after a refusal, input is read and dropped this long, so the client can read the answer
IDLE_CLOSE_S = 0.1  # on SIGTERM, an idle keep-alive connection's last chance to deliver bytes already sent
RETRY_AFTER_S = 1
log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True, slots=True)
class ClientLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s)


_configured: list[ClientLimits] = []


def configure(limits: ClientLimits) -> None:
    """The limits of this process's connections (``tabserve serve``); without it, read from ``TABSERVE_*``."""
    _configured[:] = [limits]
    read_limits.cache_clear()


@functools.cache
def read_limits() -> ClientLimits:
    """As configured, else from ``TABSERVE_*`` variables, once per process (worker processes, plain uvicorn)."""
    return _configured[0] if _configured else ClientLimits.from_settings(Settings())


def error_bytes(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
                default_headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A whole HTTP/1.1 response, written straight to the transport: no ASGI cycle exists (or is usable)."""
    body = orjson.dumps({"error": message})
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in (default_headers or [])]
    lines += [b"content-type: application/json", b"content-length: " + str(len(body)).encode(),
              b"connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Guarded:
    """What both protocols add; mixed in before uvicorn's class, whose attributes (transport, flow, cycle,
    loop, server_state, config) it uses."""

    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def _guard_init(self) -> None:
        self.limits = read_limits()
        self._reading = HEAD
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # raw bytes of the current request's head so far (0 once the head is complete)
        self._discarding = False
        self._closer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._inner_app = self.app  # type: ignore[has-type]
        self.app = self._run_app

    # -- reading ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._watch(HEAD, self.limits.header_timeout_s)  # a fresh connection owes its first request's head

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._reading != BODY:
            if self._reading == IDLE:  # the first bytes of a keep-alive connection's next request
                self._watch(HEAD, self.limits.header_timeout_s)
            seen = self._head_bytes + len(data)
            if seen > self.limits.max_header_bytes:
                self._feed_head_within_limit(data)
                return
            self._head_bytes = seen
        super().data_received(data)  # type: ignore[misc]
        if self._stopping:
            self._close_after_response()

    def _feed_head_within_limit(self, data: bytes) -> None:
        """Feed only what the limit still allows: the head must end within it, or the request is refused
        (431) before the parser buffers any more of it."""
        allowed = self.limits.max_header_bytes - self._head_bytes
        self._head_bytes += len(data)
        if allowed > 0:
            super().data_received(data[:allowed])  # type: ignore[misc]
        if self.transport.is_closing() or self._discarding:
            return
        if self._head_bytes:  # not reset by a completed head: it is over the limit
            self._refuse(431, f"the request headers are over the limit of {self.limits.max_header_bytes} bytes "
                              "(max_header_bytes); send fewer or smaller headers")
            return
        super().data_received(data[allowed:])  # type: ignore[misc]
        if self._stopping:
            self._close_after_response()

    def _head_complete(self) -> None:
        self._head_bytes = 0
        self._watch(BODY, self.limits.body_timeout_s)

    def _body_part(self) -> None:
        if self.limits.body_timeout_s > 0:  # 0: no limit
            self._deadline = self.loop.time() + self.limits.body_timeout_s

    def _message_complete(self) -> None:
        self._reading = IDLE

    # -- the timer: one per connection, re-armed only when it fires early ----------------------------------

    def _watch(self, what: int, timeout_s: float) -> None:
        self._reading = what
        if timeout_s <= 0:  # no limit configured
            self._deadline = float("inf")
            return
        self._deadline = deadline = self.loop.time() + timeout_s
        watchdog = self._watchdog
        if watchdog is not None:
            if watchdog.when() <= deadline:
                return  # it fires first and re-arms for what is left
            watchdog.cancel()  # armed for a longer timeout (a body's, then a shorter header timeout)
        self._watchdog = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._watchdog = None
        if self._reading == IDLE or self._discarding or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._deadline == float("inf"):
            return
        if self._reading == BODY and (self.flow.read_paused or self._awaits_100_continue()):  # type: ignore[attr-defined]
            # Not the client's fault: the app has not asked for more yet.
            self._deadline = now + self.limits.body_timeout_s
        if now < self._deadline:
            self._watchdog = self.loop.call_later(self._deadline - now, self._check)
            return
        if self._reading == HEAD:
            if not self._head_bytes:  # silent since connecting or since its last answer: nothing to answer
                self.transport.close()
                return
            self._refuse(408, f"the request headers were not received within {self.limits.header_timeout_s:g} s "
                              "(header_timeout_s)")
        else:
            self._refuse(408, f"the request body stalled: no bytes for {self.limits.body_timeout_s:g} s "
                              "(body_timeout_s); send the body without pauses")

    def _awaits_100_continue(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.waiting_for_100_continue

    # -- refusing -----------------------------------------------------------------------------------------

    def _refuse(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer ``status`` unless a response has begun, then close after a lingering read."""
        log.warning("%s %d: %s", _peer(self.transport), status, message)
        cycle = self.cycle
        answer = True
        if cycle is not None and not cycle.response_complete:
            answer = not cycle.response_started
            # The app's receive() now returns http.disconnect and anything it sends is dropped.
            cycle.response_started = cycle.response_complete = cycle.disconnected = True
            cycle.message_event.set()
        elif self._reading == BODY:  # the app already answered; the rest of the body never came
            answer = False
        self._reading = IDLE
        if answer:
            self.transport.write(error_bytes(status, message, headers,
                                             default_headers=self.server_state.default_headers))  # type: ignore[attr-defined]
        self._linger()

    def _linger(self) -> None:
        self._discarding = True
        self.flow.resume_reading()  # type: ignore[attr-defined]
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._closer = self.loop.call_later(LINGER_S, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        for handle in (self._watchdog, self._closer):
            if handle is not None:
                handle.cancel()
        self._watchdog = self._closer = None

    # -- stopping (SIGTERM) -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn closes every connection without a request in progress; this one lets a connection that
        was accepted send its request first."""
        self._stopping = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        elif self._discarding:  # refused: the answer is out, stop dropping its input
            if self._closer is not None:
                self._closer.cancel()
            self._closer = self.loop.call_later(IDLE_CLOSE_S, self.transport.close)
        elif self._reading == HEAD:
            pass  # a fresh connection, or a request's head on its way: the header timer bounds the wait
        else:
            self._closer = self.loop.call_later(IDLE_CLOSE_S, self._close_if_idle)

    def cut(self) -> None:
        """The grace period is over: a request head still on its way gets a 503, an idle connection is closed."""
        if self._discarding or self.transport.is_closing():
            return
        cycle = self.cycle
        wire = getattr(self, "_wire", None)
        if self._reading == HEAD and self._head_bytes:
            self._refuse(503, "the server is shutting down and the request was not received in time; retry it",
                         ((b"retry-after", str(RETRY_AFTER_S).encode()),))
        elif cycle is None or cycle.response_complete:
            self.transport.close()
        elif wire is not None and wire.awaits_body(cycle):  # its body still on its way: as _run_app answers
            cycle.response_started = cycle.response_complete = True
            headers, body = _grace_answer(self.config.timeout_graceful_shutdown,  # type: ignore[attr-defined]
                                          wire.refused(cycle, 503))
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
                name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body)
            self.transport.close()

    def _close_if_idle(self) -> None:
        self._closer = None
        if self._reading == IDLE and not self.transport.is_closing():
            super().shutdown()  # type: ignore[misc]

    def _close_after_response(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = False

    async def _run_app(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._inner_app(scope, receive, send)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the grace period ends; it would answer 500.
            cycle = getattr(send, "__self__", None)
            if not self._stopping or cycle is None:
                raise
            if cycle.response_started:
                self.transport.close()
                return
            headers, content = _grace_answer(self.config.timeout_graceful_shutdown,  # type: ignore[attr-defined]
                                             (scope.get("state") or {}).get("request_id"))
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": content, "more_body": False})


def _grace_answer(grace: float, request_id: str | None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 503 of a request that the shutdown grace period cut short: headers and body."""
    body = {"error": f"the server is shutting down and the request did not finish within the {grace:g} s "
                     "grace period (shutdown_grace_s); retry it"}
    headers = [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_S).encode()),
               (b"connection", b"close")]
    if request_id:
        body["request_id"] = request_id
        headers.append((b"x-request-id", request_id.encode()))
    content = orjson.dumps(body)
    headers.append((b"content-length", str(len(content)).encode()))
    return headers, content


def _peer(transport: asyncio.Transport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "client"


class H11Protocol(_Guarded, h11_impl.H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard_init()
        # h11 refuses an incomplete head past this size by itself (answered 431 below, not 400).
        self.conn = _WatchedConnection(self, self.limits.max_header_bytes)

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.limits.max_header_bytes:
            self._refuse(431, f"the request headers are over the limit of {self.limits.max_header_bytes} bytes "
                              "(max_header_bytes); send fewer or smaller headers")
            return
        super().send_400_response(msg)


class _WatchedConnection(h11.Connection):
    """h11's parser, telling the protocol where each request stands (h11 has no callbacks)."""

    def __init__(self, protocol: H11Protocol, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self._protocol = protocol

    def next_event(self) -> Any:
        event = super().next_event()
        kind = type(event)
        if kind is h11.Data:
            self._protocol._body_part()
        elif kind is h11.Request:
            self._protocol._head_complete()
        elif kind is h11.EndOfMessage:
            self._protocol._message_complete()
        return event


if httptools_impl is not None:
    class HttpToolsProtocol(_Guarded, httptools_impl.HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._guard_init()
            self._wire: Wire | None = None  # the app's wire lane (api/wire.py), found at the first request
            self.wire_running = 0  # requests of the wire lane being answered (GracefulServer waits for them)

        def on_headers_complete(self) -> None:
            self._head_complete()
            wire = self._wire or self._find_wire()
            if wire is not None:
                cycle = wire.take(self)
                if cycle is not None:
                    self.cycle = cycle
                    return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_part()
            cycle = self.cycle
            if type(cycle) is WireCycle:
                if not cycle.response_complete:
                    cycle.body += body
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._reading = IDLE
            cycle = self.cycle
            if type(cycle) is WireCycle:
                if not cycle.response_complete:
                    self._wire.run(self, cycle)  # type: ignore[union-attr]
                return
            super().on_message_complete()

        def _find_wire(self) -> Wire | None:
            wire = getattr(self._inner_app, "wire", None)  # tabserve's app, once its layers are built
            self._wire = wire if isinstance(wire, Wire) else None
            return self._wire


def protocol_class() -> type[asyncio.Protocol]:
    """The guarded protocol uvicorn's ``http="auto"`` would pick: httptools when installed, else h11."""
    return HttpToolsProtocol if httptools_impl is not None else H11Protocol
