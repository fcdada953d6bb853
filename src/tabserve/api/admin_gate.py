"""The gate in front of every route that changes what is served (reload, traffic, v2 repository load/unload).

A route is an admin route because it declares ``dependencies=[admin_gate(settings)]`` next to its path: the
scope check, the on/off switch and the CSRF checks all follow from that one declaration, and
``admin_routes(app)`` lists them (a test pins the list). The gate refuses, in order:

- every request when admin routes are off (``admin_routes``: ``auto`` turns them on only with API keys);
- a key without the ``admin`` scope (the guard has already refused requests without a valid key);
- a request a browser sent from another site (``Sec-Fetch-Site``, else ``Origin`` against ``Host``; an origin
  in ``cors_origins`` is trusted), as Go's ``http.CrossOriginProtection`` does: a page must not drive a
  keyless local server through its visitor;
- a body whose ``Content-Type`` is not ``application/json``: text/plain, form and multipart bodies are what a
  browser may send without a CORS preflight. A body without a Content-Type is accepted only from a client that
  is not a browser (no ``Origin``): tritonclient sends its load/unload JSON that way.
"""

# No "from __future__ import annotations": FastAPI 0.115 resolves a callable instance's string annotations
# against an empty namespace (NameError on Request); real annotations work on every version.

from fastapi import Depends
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.requests import Request

from tabserve.api.auth import SCOPE_KEY, ApiKey, parse_api_keys
from tabserve.api.errors import UnsupportedMediaType
from tabserve.core.quoting import quoted
from tabserve.errors import NotAuthenticated, PermissionDenied
from tabserve.settings import Settings

JSON = "application/json"
_SAME_SITE = frozenset({"same-origin", "none"})  # "none": typed in the address bar, a bookmark


class AdminGate:
    """A FastAPI dependency; ``enabled`` and ``keys`` are decided once, from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.keys = bool(parse_api_keys(settings.api_keys))  # checked already by guard.Admission
        self.enabled = settings.admin_routes == "on" or (settings.admin_routes == "auto" and self.keys)
        self.setting = settings.admin_routes
        self.trusted_origins = frozenset(o for o in settings.cors_origins if o != "*")

    async def __call__(self, request: Request) -> None:
        what = f"{request.method} {request.url.path}"
        if not self.enabled:
            why = "TABSERVE_ADMIN_ROUTES=off" if self.setting == "off" else "no API keys are configured"
            raise PermissionDenied(f"admin routes are off ({why}): configure API keys with the 'admin' scope "
                                   "(TABSERVE_API_KEYS), or set TABSERVE_ADMIN_ROUTES=on for local use")
        if self.keys:
            key: ApiKey | None = request.scope.get(SCOPE_KEY)
            if key is None:
                raise NotAuthenticated("missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
            if "admin" not in key.scopes:
                raise PermissionDenied(f"API key {key.name!r} lacks the 'admin' scope that {what} needs")
        headers = request.headers
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site")
        if self._cross_site(origin, site, headers.get("host", "")):
            raise PermissionDenied(f"{what} refused: a browser sent it from another site "
                                   f"(Origin {quoted(origin)}, Sec-Fetch-Site {quoted(site)}); admin calls come "
                                   "from API clients, this server's own pages or CORS_ORIGINS")
        content_type = headers.get("content-type")
        has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
        if content_type is not None:
            media = content_type.split(";", 1)[0].strip().lower()
            if media != JSON:
                raise UnsupportedMediaType(f"{what} takes a JSON body: send 'Content-Type: {JSON}' (the body "
                                           f"may be empty), not {quoted(media)}", expected=JSON)
        elif has_body and origin is not None:
            raise UnsupportedMediaType(f"{what} takes a JSON body: send 'Content-Type: {JSON}'", expected=JSON)

    def _cross_site(self, origin: str | None, site: str | None, host: str) -> bool:
        if origin is not None and origin in self.trusted_origins:  # a web app the operator listed for CORS
            return False
        if site is not None:  # every current browser sends it
            return site not in _SAME_SITE
        if origin is None:  # not a browser (curl, tritonclient, an SDK)
            return False
        scheme, sep, rest = origin.partition("://")
        return not (sep and scheme in ("http", "https") and rest.lower() == host.lower())


def admin_gate(settings: Settings) -> DependsParam:
    """The declaration an admin route carries: ``dependencies=[admin_gate(settings)]``."""
    return Depends(AdminGate(settings))


def api_routes(app: Starlette) -> list[tuple[str, str, bool]]:
    """(method, full path, is an admin route) of every FastAPI route of ``app``, sorted."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before lazily included routers (0.115-era): app.routes is flat
        found = [(r.path, r) for r in app.routes if isinstance(r, APIRoute)]
    else:
        found = [(ctx.path or "", ctx.original_route) for ctx in iter_route_contexts(app.routes)
                 if isinstance(ctx.original_route, APIRoute)]
    return sorted((method, path, any(isinstance(d.dependency, AdminGate) for d in route.dependencies))
                  for path, route in found for method in route.methods)


def admin_routes(app: Starlette) -> list[tuple[str, str]]:
    """(method, path) of every admin route of ``app``: what the docs and a test list."""
    return [(method, path) for method, path, admin in api_routes(app) if admin]
