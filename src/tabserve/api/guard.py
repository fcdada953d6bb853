"""The door every request passes before any route: API key and scope, concurrency limit, rate limit.

Added by ``create_app`` only when one of them is configured, so the default server pays nothing. What a
request needs comes from the route table's declaration (api/routes.py): ``probe`` routes (health, ``/metrics``)
are never authenticated, limited or shed, as an orchestrator must always see the truth; ``public`` ones (the
API's description) need no key. Every check is a header scan, a dict lookup or a counter; the body is not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tabserve.api.auth import SCOPE_KEY, ApiKey, KeyRing, parse_api_keys, presented_key
from tabserve.api.errors import error_response, v2_error_response
from tabserve.api.ratelimit import CLIENT, Quota, RateLimiter, counters_for, parse_quota, rate_headers
from tabserve.errors import ConfigError, NotAuthenticated, Overloaded, TabserveError
from tabserve.settings import Settings

# What a request needs, by method and path: "probe", "public", or anything else (a key).
AccessOf = Callable[[str, str], str]


def _keyed(method: str, path: str) -> str:
    return "read"


class Guard:
    def __init__(self, app: ASGIApp, *, keys: KeyRing | None = None, limiter: RateLimiter | None = None,
                 key_quotas: dict[str, Quota | None] | None = None, max_concurrent: int = 0,
                 on_shed: Callable[[str], None] | None = None, access: AccessOf = _keyed) -> None:
        self.app = app
        self.access = access  # RouteTable.access: what the route declares
        self.keys = keys
        self.limiter = limiter
        self.default_quota = limiter.default if limiter is not None else None
        self.key_quotas = key_quotas or {}  # key name -> its own quota (None: unlimited)
        self.max_concurrent = max_concurrent
        self.in_flight = 0
        self.on_shed = on_shed  # metrics.shed(reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.access(scope["method"], get_route_path(scope) if scope.get("root_path") else scope["path"])
        if access == "probe":
            await self.app(scope, receive, send)
            return
        identity: str | None = None
        quota = self.default_quota
        try:
            if self.keys is not None and access != "public":
                token = presented_key(scope)
                key = self.keys.find(token) if token is not None else None
                if key is None:
                    await self._charge_address(scope, quota)  # guessing keys is rate-limited too
                    raise NotAuthenticated(
                        "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'" if token is None
                        else "invalid API key")
                scope[SCOPE_KEY] = key  # the admin routes check its scopes (api/admin_gate.py)
                identity = "key:" + key.name
                quota = self.key_quotas.get(key.name, quota)
            if self.max_concurrent and self.in_flight >= self.max_concurrent:
                raise self._shed()
            if quota is not None and self.limiter is not None:
                if identity is None:
                    identity = _address(scope)
                await self.limiter.charge(scope, identity, quota, 1)
                scope[CLIENT] = (identity, quota)
        except TabserveError as exc:
            await self._refuse(scope, receive, send, exc)
            return
        app_send = _with_rate_headers(scope, send) if CLIENT in scope else send
        if not self.max_concurrent:
            await self.app(scope, receive, app_send)
            return
        # A request counts against the limit once its body is in: a client that stalls its upload (or sends it
        # slowly) holds a connection, not a slot that a complete request could use. The limit is checked again
        # then, so that uploads finishing together cannot overshoot it.
        counted = False
        shed: Overloaded | None = None

        async def receive_counted() -> Message:
            nonlocal counted, shed
            message = await receive()
            if not counted and message["type"] == "http.request" and not message.get("more_body", False):
                if self.in_flight >= self.max_concurrent:
                    shed = self._shed()
                    raise shed
                self.in_flight += 1
                counted = True
            return message

        if not _has_body(scope):
            self.in_flight += 1
            counted = True
        try:
            await self.app(scope, receive if counted else receive_counted, app_send)
        except Overloaded as exc:
            if exc is not shed:  # not ours; shed ones are answered by endpoints that read bodies themselves
                raise
            await self._refuse(scope, receive, send, exc)
        finally:
            if counted:
                self.in_flight -= 1

    def _shed(self) -> Overloaded:
        if self.on_shed is not None:
            self.on_shed("concurrency")
        return Overloaded(f"{self.in_flight} requests are in flight, the limit is {self.max_concurrent}; "
                          "retry shortly", limit=self.max_concurrent)

    async def _charge_address(self, scope: Scope, quota: Quota | None) -> None:
        if quota is not None and self.limiter is not None:
            await self.limiter.charge(scope, _address(scope), quota, 1)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, exc: TabserveError) -> None:
        response = v2_error_response(exc) if scope["path"].startswith("/v2") else error_response(exc)
        await response(scope, receive, _with_rate_headers(scope, send))


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value != b"0"
        if name == b"transfer-encoding":
            return True
    return False


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def _with_rate_headers(scope: Scope, send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = rate_headers(scope)
            if extra:
                message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return send_with_headers


# -- configuration -------------------------------------------------------------------------------------------

CORS_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Content-Encoding", "X-Request-ID",
                "Inference-Header-Content-Length"]
CORS_EXPOSED = ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
                "X-Request-ID", "Inference-Header-Content-Length"]
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class Admission:
    """Auth, limits and CORS as configured, checked once: a bad value refuses to start with a clear error."""

    keys: tuple[ApiKey, ...]
    quota: Quota | None
    key_quotas: dict[str, Quota | None]
    storage: str
    max_concurrent: int
    cors_origins: tuple[str, ...]
    cors_credentials: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        keys = parse_api_keys(settings.api_keys)
        quota = parse_quota(settings.rate_limit)
        key_quotas = {k.name: parse_quota(k.rate_limit, f"rate_limit of API key {k.name!r}")
                      for k in keys if k.rate_limit is not None}
        origins = tuple(settings.cors_origins)
        if "*" in origins and settings.cors_allow_credentials:
            raise ConfigError("cors_origins '*' with cors_allow_credentials would let any web page send requests "
                              "with its visitors' credentials; list the allowed origins instead")
        if "*" in origins and len(origins) > 1:
            raise ConfigError("cors_origins: '*' allows every origin; give it alone or list origins without it")
        bad = [o for o in origins if o != "*" and not _ORIGIN.match(o)]
        if bad:
            raise ConfigError(f"cors_origins: {bad[0]!r} is not an origin; write scheme://host[:port] with no "
                              "path or trailing slash, e.g. https://app.example.com")
        if quota is not None or key_quotas:
            counters_for(settings.rate_limit_storage)  # fail now on a bad URI or a missing client library
        return cls(keys, quota, key_quotas, settings.rate_limit_storage, settings.max_concurrent_requests,
                   origins, settings.cors_allow_credentials)

    @property
    def guarded(self) -> bool:
        return bool(self.keys or self.quota or self.key_quotas or self.max_concurrent)


def rate_limiter(admission: Admission, metrics: Any = None) -> RateLimiter | None:
    """The limiter the guard charges one unit per request with and the data plane a batch's rows; None when
    no rate limit is configured."""
    if admission.quota is None and not admission.key_quotas:
        return None
    return RateLimiter(counters_for(admission.storage), admission.quota,
                       on_refused=getattr(metrics, "rate_limited", None))


def wrap(app: ASGIApp, admission: Admission, limiter: RateLimiter | None, access: AccessOf,
         metrics: Any = None) -> ASGIApp:
    """``app`` behind the guard (and CORS, outside it: preflights need no key, refusals carry CORS headers).
    Nothing is added when all is off."""
    if admission.guarded:
        app = Guard(app, keys=KeyRing(admission.keys) if admission.keys else None, limiter=limiter,
                    key_quotas=admission.key_quotas, max_concurrent=admission.max_concurrent,
                    on_shed=getattr(metrics, "shed", None), access=access)
    if admission.cors_origins:
        app = CORSMiddleware(app, allow_origins=list(admission.cors_origins),
                             allow_credentials=admission.cors_credentials, allow_methods=["GET", "POST"],
                             allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED, max_age=600)
    return app
