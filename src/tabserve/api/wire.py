"""The wire lane: a prediction request answered from the HTTP connection itself, without an ASGI cycle.

uvicorn gives every request a ``RequestResponseCycle``, an ``asyncio.Event``, a task, a ``receive`` and two
``send`` messages whose headers it checks one by one, and writes the answer in two socket writes. Skipping it (with
the smaller cuts that came with it) took a one-row prediction from 342k to ~250k user-space instructions at c32
(benchmarks/instructions.py; a bare ASGI app on uvicorn: 170k). For the
prediction routes, when nothing but tabserve's request context stands in front of them (no guard, CORS, trusted
proxies nor ``root_path``), the connection protocol (api/transport.py) hands a request whose body it has read
whole to the same coroutine the ASGI path runs (``RequestContextMiddleware.answer``: request id, metrics, access
log, the data plane, error masking), steps it by hand, and writes the answer in one write. A coroutine that
waits (a queued micro-batch, a pinned version loading) is resumed by its future's callback, as a task would be.

Everything else takes uvicorn's path: other routes and methods, a chunked or announced-large body, ``Expect:
100-continue``, a request pipelined behind one still in progress, a connection whose writes are paused (the
client is not reading), uvicorn's ``limit_concurrency``. A ``WireCycle`` stands in ``protocol.cycle`` while the
request is in progress, so uvicorn's pipelining, shutdown and disconnect handling see it as they see their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httptools
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from tabserve.observability.requests import INCOMING_ID, WHOLE_BODY

if TYPE_CHECKING:
    from tabserve.observability.requests import RequestContextMiddleware

log = logging.getLogger("uvicorn.error")
_CLOSE = b"connection: close\r\n"
# headers that send a request through uvicorn's path: a body not read whole here (chunked, after 100-continue),
# one to inflate (the data plane's limits on inflated sizes apply), a protocol switch
_ASIDE = frozenset((b"transfer-encoding", b"expect", b"content-encoding", b"upgrade"))
_FAULT_BODY = b'{"error":"the server failed to answer this request"}'
_FAULT = (b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
          b"connection: close\r\n\r\n%b" % (len(_FAULT_BODY), _FAULT_BODY))


class _NoEvent:
    """uvicorn and the guarded protocol wake a cycle's app with ``message_event.set()``; here nothing waits."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class WireCycle:
    """One request on the wire lane: the attributes the protocols read from a cycle, and its body so far."""

    __slots__ = ("body", "disconnected", "keep_alive", "matched", "response_complete", "response_started",
                 "running", "scope")

    message_event = _NO_EVENT
    waiting_for_100_continue = False

    def __init__(self, scope: dict[str, Any], matched: Any, keep_alive: bool) -> None:
        self.scope = scope
        self.matched = matched
        self.keep_alive = keep_alive
        self.body = b""
        self.response_started = self.response_complete = self.disconnected = False
        self.running = False  # its body is in and its answer is being made


class Wire:
    """The fast routes of one app, for its connections. ``context``: the outermost ASGI layer, which also
    answers them on the ASGI path; ``max_body_bytes``: the largest body taken here (larger ones are decoded on a
    thread by the data plane: they gain nothing from skipping the cycle)."""

    def __init__(self, context: RequestContextMiddleware, app: Any, max_body_bytes: int) -> None:
        lane = context.lane
        assert lane is not None
        self.context = context
        self.match = lane.match
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._defaults: list[tuple[bytes, bytes]] | None = None  # uvicorn's default headers (server, date)...
        self._default_lines = b""  # ...as they are written

    def take(self, protocol: Any) -> WireCycle | None:
        """At the end of a request's head: a cycle when this lane answers it, else None (uvicorn's path)."""
        parser = protocol.parser
        if parser.get_method() != b"POST" or protocol.root_path or protocol.limit_concurrency is not None:
            return None
        cycle = protocol.cycle
        if (cycle is not None and not cycle.response_complete) or protocol.flow.write_paused:
            return None  # behind a request in progress (pipelined), or a client that does not read its answers
        length = -1
        incoming = None
        for name, value in protocol.headers:
            if name == b"content-length":
                if not value.isdigit() or length >= 0:
                    return None  # uvicorn's path says what is wrong with it
                length = int(value)
            elif name == b"x-request-id":
                incoming = value
            elif name in _ASIDE:
                return None
        if length < 0 or length > self.max_body_bytes:
            return None
        raw_path = protocol.url
        query = b""
        if not raw_path.startswith(b"/") or b"?" in raw_path or b"#" in raw_path:  # a plain path needs no parser
            url = httptools.parse_url(raw_path)
            raw_path, query = url.path, url.query or b""
        if b"%" in raw_path or not raw_path.isascii():
            return None
        scope = protocol.scope
        scope["method"] = "POST"
        scope["path"] = raw_path.decode("ascii")
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        matched = self.match(scope)
        if matched is None:
            return None
        scope["app"] = self.app
        scope[INCOMING_ID] = incoming
        version = parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        return WireCycle(scope, matched, version != "1.0" and parser.should_keep_alive())

    @staticmethod
    def awaits_body(cycle: Any) -> bool:
        """Whether ``cycle`` is a request of this lane whose body is still on its way."""
        return type(cycle) is WireCycle and not cycle.running and not cycle.response_complete

    def refused(self, cycle: WireCycle, status: int) -> str:
        """A request answered by the connection before its body was in (the shutdown grace ran out): its id,
        and its access-log line and metrics, as the request context gives them on the ASGI path."""
        return self.context.refused(cycle.scope, status)

    def run(self, protocol: Any, cycle: WireCycle) -> None:
        """The whole body has arrived: answer it now, or when the coroutine's wait ends. Until then the protocol
        counts it in ``wire_running`` (a stopping server waits for those)."""
        cycle.running = True
        protocol.wire_running += 1
        cycle.scope[WHOLE_BODY] = cycle.body
        message = {"type": "http.request", "body": cycle.body, "more_body": False}

        async def receive() -> dict[str, Any]:
            return message

        coro = self.context.answer(cycle.scope, receive, cycle.matched,
                                   lambda response: self._write(protocol, cycle, response))
        self._step(protocol, cycle, coro)

    def _step(self, protocol: Any, cycle: WireCycle, coro: Coroutine[Any, Any, Response]) -> None:
        try:
            waiting = coro.send(None)
        except StopIteration:  # answered (``_write``, before the request's log line and metrics)
            return
        except Exception as exc:  # answer() answers its own faults: this is a bug of ours
            log.error("the wire lane failed on a request", exc_info=exc)
            self._fail(protocol, cycle)
            return
        resume: Callable[..., None] = lambda *_: self._step(protocol, cycle, coro)
        if waiting is None:  # a bare yield (asyncio.sleep(0)): next loop turn, as a task would
            protocol.loop.call_soon(resume)
            return
        waiting._asyncio_future_blocking = False  # what a task does with the future it is handed
        waiting.add_done_callback(resume)

    def _write(self, protocol: Any, cycle: WireCycle, response: Response) -> None:
        if cycle.response_complete:  # defensive: a request is answered once
            return
        cycle.response_started = cycle.response_complete = True
        protocol.wire_running -= 1
        transport = protocol.transport
        if cycle.disconnected or transport.is_closing():
            return  # the client is gone; the request was logged and counted as answered
        keep_alive = cycle.keep_alive
        defaults = protocol.server_state.default_headers  # a new list each second (the date)
        if defaults is not self._defaults:
            self._defaults = defaults
            self._default_lines = b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
        head = [STATUS_LINE[response.status_code], self._default_lines]
        for name, value in response.raw_headers:
            if name == b"connection" and b"close" in value.lower():
                keep_alive = False
            head += (name, b": ", value, b"\r\n")
        if not keep_alive:
            head.append(_CLOSE)
        head += (b"\r\n", response.body)
        transport.write(b"".join(head))
        if response.background is not None:
            protocol.loop.create_task(response.background())
        if not keep_alive:
            transport.close()
        protocol.on_response_complete()

    @staticmethod
    def _fail(protocol: Any, cycle: WireCycle) -> None:
        if cycle.response_started:
            protocol.transport.close()
            return
        cycle.response_started = cycle.response_complete = True
        protocol.wire_running -= 1
        if not protocol.transport.is_closing():
            protocol.transport.write(_FAULT)
            protocol.transport.close()


__all__ = ["Wire", "WireCycle"]
