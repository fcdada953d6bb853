"""The one place that maps domain errors to HTTP status codes and error bodies."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from tabserve.core.quoting import shortened
from tabserve.errors import (
    BundleError,
    ClientGone,
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
    ServerFault,
    TabserveError,
    UnsupportedEncoding,
)


class UnsupportedMediaType(UnsupportedEncoding):
    """The request's Content-Type is not one the route takes (HTTP-only: the admin routes' CSRF defence)."""

    kind = "unsupported_media_type"


# Error bodies stay small whatever a client sent: messages quote client values through core.quoting, and this
# caps what slipped through (a message listing a model's 5,000 features is still whole).
MAX_MESSAGE_CHARS = 16 * 1024
MAX_CONTEXT_CHARS = 256

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
    UnsupportedMediaType: 415,
    ClientGone: 499,  # nginx's "client closed request": only the log and the metrics see it
    ServerFault: 500,  # our fault: the body carries the request id that finds the traceback in the log
}
# The Open Inference Protocol (v2) answers bad input with 400, as KServe and Triton do; so is a bundle that its
# repository extension cannot load.
V2_STATUS: dict[type[TabserveError], int] = {**STATUS, InvalidInput: 400, BundleError: 400, ConfigError: 400,
                                             UnsupportedEncoding: 400, UnsupportedMediaType: 415}
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


def _message(exc: TabserveError) -> str:
    return shortened(exc.message, MAX_MESSAGE_CHARS)


def _context(exc: TabserveError) -> dict:
    return {k: shortened(v, MAX_CONTEXT_CHARS) if isinstance(v, str) else v for k, v in exc.context.items()}


def error_response(exc: TabserveError, request_id: str | None = None) -> Response:
    """``{"detail": message, "error": kind, ...context}`` with the mapped status; a server fault (5xx but
    503/504) names the ``request_id`` whose log line holds the traceback."""
    headers = _headers(exc)
    status = status_for(exc)
    fields = {"detail": _message(exc), "error": exc.kind, **_context(exc)}
    if request_id is not None and status in FAULTS:
        fields["detail"] += f" (request id {request_id})"
        fields["request_id"] = request_id
    return Response(orjson.dumps(fields), status_code=status, media_type="application/json", headers=headers)


def v2_error_response(exc: TabserveError, request_id: str | None = None) -> Response:
    """The Open Inference Protocol's error body, ``{"error": message}``, with the v2 status."""
    headers = _headers(exc)
    status = status_for(exc, V2_STATUS)
    message = _message(exc)
    if request_id is not None and status in FAULTS:
        message += f" (request id {request_id})"
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=headers)


FAULTS = frozenset({500, 502})  # ours, not the client's and not a passing state: the log has the rest
