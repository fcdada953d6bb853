"""The one place that maps domain errors to HTTP status codes and error bodies."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from tabserve.errors import (
    BundleError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    TabserveError,
)

STATUS: dict[type[TabserveError], int] = {
    InvalidInput: 422,
    PayloadTooLarge: 413,
    ModelNotFound: 404,
    ModelNotReady: 503,
    Overloaded: 503,
    BundleError: 422,
}
RETRY_AFTER_SECONDS = {ModelNotReady: "1", Overloaded: "1"}


def status_for(exc: TabserveError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(exc: TabserveError) -> Response:
    """``{"detail": message, "error": kind, ...context}`` with the mapped status."""
    headers = {}
    retry = RETRY_AFTER_SECONDS.get(type(exc))
    if retry:
        headers["Retry-After"] = retry
    body = orjson.dumps({"detail": exc.message, "error": exc.kind, **exc.context})
    return Response(body, status_code=status_for(exc), media_type="application/json", headers=headers)
