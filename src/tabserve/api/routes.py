"""The route table: each route declared once (method, path, access scope, handler, docs).

From the one declaration follow: the FastAPI routes and the OpenAPI schema (``mount``), the admin gate on
``admin`` routes, the guard's access decision (``RouteTable.access``: probes are never authenticated nor limited,
public ones need no key), and the fast dispatch (``FastDispatch``), which answers the prediction routes straight
from ASGI, ahead of FastAPI's own middleware and router, under any ``root_path``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from tabserve.api.admin_gate import admin_gate
from tabserve.api.codecs import json_response
from tabserve.api.errors import error_response, v2_error_response
from tabserve.errors import ServerFault
from tabserve.observability.logging import get_logger
from tabserve.observability.requests import ROUTE
from tabserve.settings import Settings

# probe: never authenticated, limited or shed (an orchestrator must always see the truth); public: readable
# without a key (the API's own description); read/predict: a valid key; admin: a key with the admin scope,
# and the admin gate (on/off switch, CSRF).
Access = Literal["probe", "public", "read", "predict", "admin"]
FastHandler = Callable[[Scope, Receive, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    access: Access
    endpoint: Callable[..., Any] | None  # None: served by FastAPI itself (the docs pages)
    fast: FastHandler | None = None  # the same endpoint from ASGI primitives, for the hot routes
    doc: dict[str, Any] = field(default_factory=dict)  # summary, response_model, responses, openapi_extra, tags

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


class RouteTable:
    def __init__(self, routes: Iterable[Route], public_prefixes: tuple[str, ...] = ()) -> None:
        self.routes = list(routes)
        self.public_prefixes = public_prefixes
        self._static: dict[tuple[str, str], Route] = {}
        self._templates: dict[tuple[str, int], list[Route]] = {}
        for r in self.routes:
            if "{" in r.path:
                self._templates.setdefault((r.method, len(r.segments)), []).append(r)
            else:
                self._static[(r.method, r.path)] = r
        self._paths: dict[str, Access] = {}  # any method: what a path with no route of that method is
        for r in self.routes:
            if "{" not in r.path:
                self._paths.setdefault(r.path, r.access)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        found = self._static.get((method, path))
        if found is not None:
            return found, {}
        parts = path.split("/")
        for r in self._templates.get((method, len(parts)), ()):
            params = _bind(r.segments, parts)
            if params is not None:
                return r, params
        return None

    def access(self, method: str, path: str) -> Access:
        """The scope a request needs; a path no route declares needs a key (it answers 404 or 405)."""
        if path.startswith(self.public_prefixes):
            return "public"
        matched = self.match(method, path)
        if matched is not None:
            return matched[0].access
        return self._paths.get(path, "read")

    def mount(self, app: FastAPI, settings: Settings) -> None:
        """Every route with an endpoint, as a FastAPI route; admin routes behind the admin gate."""
        gate = [admin_gate(settings)]
        for r in self.routes:
            if r.endpoint is None:
                continue
            doc = dict(r.doc)
            doc.setdefault("include_in_schema", True)
            app.add_api_route(r.path, r.endpoint, methods=[r.method],
                              dependencies=gate if r.access == "admin" else None, **doc)


def _bind(template: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for want, got in zip(template, parts, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class FastDispatch:
    """The routes with a ``fast`` handler, answered from ASGI without FastAPI's router, dependency solving and
    middleware; every other request goes on to FastAPI. It sits inside tabserve's own middleware (request id,
    access log, metrics, proxies, path masking, the guard), so those apply alike. A fault that escapes a
    handler is answered 500 with the request id, and logged with its traceback."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        fast = [r for r in table.routes if r.fast is not None]
        self.table = RouteTable(fast)
        self.methods = frozenset(r.method for r in fast)
        self.log = get_logger("tabserve.requests")

    def match(self, scope: Scope) -> tuple[Route, dict[str, str]] | None:
        """The fast route of an HTTP request, and its path parameters; None: not a fast route."""
        if scope["method"] not in self.methods:
            return None
        return self.table.match(scope["method"], get_route_path(scope) if scope.get("root_path") else scope["path"])

    async def answer(self, scope: Scope, receive: Receive, matched: tuple[Route, dict[str, str]]) -> Response:
        try:
            return await self.start(scope, receive, matched)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: 500 with the id, never a dropped socket
            return self.fault(scope, matched, exc)

    def start(self, scope: Scope, receive: Receive, matched: tuple[Route, dict[str, str]]) -> Awaitable[Response]:
        """The matched route's handler, begun: its awaitable (``answer`` without a frame of its own; whoever
        awaits it answers what escapes with ``fault``)."""
        route, params = matched
        scope[ROUTE] = route.path
        return route.fast(scope, receive, params)  # type: ignore[misc]

    def fault(self, scope: Scope, matched: tuple[Route, dict[str, str]], exc: Exception) -> Response:
        return self._fault(scope, matched[0].path, exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            matched = self.match(scope)
            if matched is not None:
                response = await self.answer(scope, receive, matched)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _fault(self, scope: Scope, template: str, exc: Exception) -> Response:
        request_id = scope.get("state", {}).get("request_id")
        self.log.error("request_failed", request_id=request_id, path=scope["path"], error=repr(exc), exc_info=exc)
        fault = ServerFault(f"the server failed on this request: {type(exc).__name__}")
        return (v2_error_response if template.startswith("/v2") else error_response)(fault, request_id)


class FastLane:
    """The fast routes answered by the outermost layer (the request context) as plain calls, when nothing stands
    between it and them (no guard or CORS configured): no middleware frames nor send wrappers per request
    (measured: ~10% of a one-row request). ``mask``: error bodies masked as ``PathMask`` masks them."""

    def __init__(self, dispatch: FastDispatch, mask: Callable[[Scope, Response], Response]) -> None:
        self.match = dispatch.match
        self.start = dispatch.start
        self.fault = dispatch.fault
        self.mask = mask


__all__ = ["Access", "FastDispatch", "FastLane", "Route", "RouteTable", "json_response"]
