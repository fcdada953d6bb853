"""Request ids, timing and the one access-log line per request, as a pure ASGI middleware."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tabserve.observability.metrics import Metrics


REQUEST_START = "tabserve.t0"  # scope key: perf_counter() when the request arrived
# scope keys set by the wire lane (api/wire.py), which reads the headers once: the X-Request-ID header's value (None:
# absent), and the whole body (it takes only bodies with a Content-Length within the limits and no Content-Encoding)
INCOMING_ID = "tabserve.incoming_id"
WHOLE_BODY = "tabserve.body"
_UNREAD = object()
ROUTE = "tabserve.route"  # scope key: the route template, for routes served outside the router
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")


class FastRoutes(Protocol):
    """Routes the middleware may answer itself, as plain calls (api/routes.py ``FastLane``)."""

    def match(self, scope: Scope) -> Any: ...

    def start(self, scope: Scope, receive: Receive, matched: Any) -> Awaitable[Response]: ...

    def fault(self, scope: Scope, matched: Any, exc: Exception) -> Response: ...

    def mask(self, scope: Scope, response: Response) -> Response: ...


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID`` accepted and returned), logs it once it is answered and
    records it in ``metrics`` (count, latency, in flight). With ``lane``, the prediction routes are answered here
    directly (their response gets the id header as it is built) and everything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True, metrics: Metrics | None = None,
                 lane: FastRoutes | None = None) -> None:
        self.app = app
        self.log = AccessLog() if access_log else None
        self.metrics = metrics
        self.lane = lane
        # Unique ids without uuid4's cost: a random prefix per process and a counter (32 hex characters).
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lane = self.lane
        if lane is not None:
            matched = lane.match(scope)
            if matched is not None:
                response = await self.answer(scope, receive, matched)
                await response(scope, receive, send)
                return
        t0 = time.perf_counter()
        scope[REQUEST_START] = t0
        request_id = _incoming_id(scope) or f"{self._id_prefix}{next(self._ids):016x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0  # until the response starts; an exception that escapes the app is answered 500
        header = (b"x-request-id", request_id.encode())
        metrics = self.metrics
        if metrics is not None:
            metrics.request_started()
        try:
            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", []), header]
                await send(message)

            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Cut by the end of the shutdown grace period before answering: tabserve's transport answers it
            # 503 with Retry-After (api/transport.py), so that is what the log and the metrics say.
            status = status or 503
            raise
        finally:
            self._finish(scope, state, header[1], status or 500, time.perf_counter() - t0)

    async def answer(self, scope: Scope, receive: Receive, matched: Any,
                     deliver: Callable[[Response], None] | None = None) -> Response:
        """A fast route's response, its id header added, logged and counted once built: the lane's requests on
        the ASGI path (``__call__``) and on the connection's own (api/wire.py), which passes ``deliver`` to
        write the answer before the log line and the metrics are made (the client waits less)."""
        t0 = time.perf_counter()
        scope[REQUEST_START] = t0
        incoming = scope.get(INCOMING_ID, _UNREAD)
        request_id = ((_incoming_id(scope) if incoming is _UNREAD else _valid_id(incoming))  # type: ignore[arg-type]
                      or f"{self._id_prefix}{next(self._ids):016x}")
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        metrics = self.metrics
        if metrics is not None:
            metrics.request_started()
        status = 500
        lane: FastRoutes = self.lane  # type: ignore[assignment]
        raw_id = request_id.encode()
        try:
            try:
                response = await lane.start(scope, receive, matched)
            except Exception as exc:  # noqa: BLE001 - a bug of ours: 500 with the id, never a dropped socket
                response = lane.fault(scope, matched, exc)
            response = lane.mask(scope, response)
            response.raw_headers.append((b"x-request-id", raw_id))
            status = response.status_code
            if deliver is not None:
                deliver(response)
            return response
        except asyncio.CancelledError:
            status = 503  # as in __call__
            raise
        finally:
            self._finish(scope, state, raw_id, status, time.perf_counter() - t0)

    def refused(self, scope: Scope, status: int) -> str:
        """A request the connection answers itself before the app saw it (api/transport.py): its id (the
        incoming one or a new one), its log line and metrics."""
        request_id = _incoming_id(scope) or f"{self._id_prefix}{next(self._ids):016x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        if self.metrics is not None:
            self.metrics.request_started()
        self._finish(scope, state, request_id.encode(), status, 0.0)
        return request_id

    def _finish(self, scope: Scope, state: dict[str, Any], request_id: bytes, status: int, elapsed: float) -> None:
        route = scope.get(ROUTE) or getattr(scope.get("route"), "path", None)
        metrics = self.metrics
        if metrics is not None:
            metrics.request_ended()
            metrics.request_finished(route, status, state.get("model"), state.get("model_version"),
                                     state.get("variant"), elapsed)
        if self.log is not None:
            self.log.request(request_id, scope["method"], route, scope["path"], status, state.get("model"),
                             state.get("model_version"), elapsed)


class AccessLog:
    """Access lines as JSON, written to a buffer that is flushed a moment later (or when full, or at exit).

    A write and flush per request cost a system call each; under load this batches them (measured with
    py-spy: structlog's per-line flush was ~4% of a single-row request)."""

    flush_after_s = 0.2

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._out = stream or sys.stdout.buffer
        self._due = False
        self._templates: dict[tuple[str, str | None, str | None, str | None], bytes] = {}  # ``request``'s

    def write(self, record: dict[str, Any]) -> None:
        self.write_line(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def request(self, request_id: bytes, method: str, route: str | None, path: str, status: int,
                model: str | None, version: str | None, seconds: float) -> None:
        """One HTTP request's line: ``write`` of the same record, formatted by one bytes template (a dict
        for orjson cost 3x as much), kept per route, method, model and version with those already in it. The
        request id (generated, or an incoming one of ``_VALID_ID``'s characters), the method (an HTTP token)
        and the time stamp need no escaping; the rest is JSON-encoded."""
        second, micros = stamp()
        template = self._templates.get((method, route, model, version)) if route else None
        if template is None:
            template = self._template(method, route, path, model, version)
        self.write_line(template % (request_id, status, seconds * 1000, second, micros))

    def _template(self, method: str, route: str | None, path: str, model: str | None,
                  version: str | None) -> bytes:
        """The line's template with the request's constant fields filled in (a client's raw path, for a
        request no route matched, is never kept: there could be any number of them)."""
        fixed = [orjson.dumps(v).replace(b"%", b"%%") if v is not None else b"null"
                 for v in (method, route if route else path, model, version)]
        template = _REQUEST_LINE % (b"%b", fixed[0], fixed[1], b"%d", fixed[2], fixed[3], b"%.3f", b"%b", b"%06d")
        if route and len(self._templates) < 4096:
            self._templates[(method, route, model, version)] = template
        return template

    def write_line(self, line: bytes) -> None:
        """One whole line (bytes, ending in a newline) into the buffer, flushed a moment later."""
        self._out.write(line)
        if not self._due:
            self._due = True
            try:
                asyncio.get_running_loop().call_later(self.flush_after_s, self.flush)
            except RuntimeError:  # no loop: write through
                self.flush()

    def flush(self) -> None:
        self._due = False
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            self._out.flush()


_REQUEST_LINE = (b'{"request_id":"%b","method":%b,"route":%b,"status":%b,"model":%b,"model_version":%b,'
                 b'"latency_ms":%b,"event":"request","level":"info","timestamp":"%b.%bZ"}\n')
# The last whole second seen, and its ISO text: the date and time of day are formatted once per second (a
# request's ``datetime.now(UTC).isoformat()`` cost ~1 µs), the microseconds by the line's template.
_second: list[Any] = [None, b""]


def stamp() -> tuple[bytes, int]:
    """Now, for a log line: the UTC date and time of day to the second (ISO), and the microseconds."""
    whole, ns = divmod(time.time_ns(), 1_000_000_000)
    if _second[0] != whole:
        _second[0], _second[1] = whole, _second_text(whole).encode()
    return _second[1], ns // 1000


def _second_text(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return _valid_id(value)
    return None


def _valid_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1")
    return text if _VALID_ID.match(text) else None
