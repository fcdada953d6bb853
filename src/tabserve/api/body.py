"""Reading request bodies within the size limit, before anything is parsed (straight from ASGI)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive, Scope

from tabserve.errors import InvalidInput, PayloadTooLarge


def _too_large(limit: int, size: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {size} bytes; the limit is {limit} bytes: send fewer rows per request",
        limit=limit,
    )


def header(scope: Scope, name: bytes) -> str | None:
    """One request header (``name`` in lower case), without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing it (413) as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length is checked before reading; a chunked body is counted as it arrives.
    """
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit, declared)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, f"more than {limit}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.scope, request.receive, limit)
