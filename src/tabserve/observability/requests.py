"""Request ids, timing and the one access-log line per request, as a pure ASGI middleware."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabserve.observability.logging import get_logger

REQUEST_START = "tabserve.t0"  # scope key: perf_counter() when the request arrived
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID`` accepted and returned) and logs it once it is answered."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log
        self.log = get_logger("tabserve.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope[REQUEST_START] = t0
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                route = scope.get("route")
                self.log.info(
                    "request",
                    request_id=request_id,
                    method=scope["method"],
                    route=getattr(route, "path", scope["path"]),
                    status=status,
                    model=state.get("model"),
                    model_version=state.get("model_version"),
                    latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                )


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None
