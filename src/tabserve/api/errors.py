"""The one place that maps domain errors to HTTP status codes and error bodies."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from tabserve.errors import (
    BundleError,
    ConfigError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    NotAuthenticated,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    TabserveError,
    UnsupportedEncoding,
)

STATUS: dict[type[TabserveError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    ModelNotFound: 404,
    ModelNotReady: 503,
    Overloaded: 503,
    DeadlineExceeded: 504,
    BundleError: 422,
    ConfigError: 422,
    RateLimited: 429,
    NotAuthenticated: 401,
    PermissionDenied: 403,
    UnsupportedEncoding: 415,
}
# The Open Inference Protocol (v2) answers bad input with 400, as KServe and Triton do; so is a bundle that its
# repository extension cannot load.
V2_STATUS: dict[type[TabserveError], int] = {**STATUS, InvalidInput: 400, BundleError: 400, ConfigError: 400,
                                             UnsupportedEncoding: 400}
RETRY_AFTER_SECONDS = {ModelNotReady: "1", Overloaded: "1"}


def _headers(exc: TabserveError) -> dict[str, str]:
    """Retry-After for errors worth retrying (a rate limit says when: ``reset`` seconds); the auth challenge."""
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.context.get("reset", 1))}
    if isinstance(exc, NotAuthenticated):
        return {"WWW-Authenticate": 'Bearer realm="tabserve"'}
    retry = next((RETRY_AFTER_SECONDS[c] for c in type(exc).__mro__ if c in RETRY_AFTER_SECONDS), None)
    return {"Retry-After": retry} if retry else {}


def status_for(exc: TabserveError, table: dict[type[TabserveError], int] = STATUS) -> int:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 500


def error_response(exc: TabserveError) -> Response:
    """``{"detail": message, "error": kind, ...context}`` with the mapped status."""
    headers = _headers(exc)
    body = orjson.dumps({"detail": exc.message, "error": exc.kind, **exc.context})
    return Response(body, status_code=status_for(exc), media_type="application/json", headers=headers)


def v2_error_response(exc: TabserveError) -> Response:
    """The Open Inference Protocol's error body, ``{"error": message}``, with the v2 status."""
    headers = _headers(exc)
    body = orjson.dumps({"error": exc.message})
    return Response(body, status_code=status_for(exc, V2_STATUS), media_type="application/json", headers=headers)
