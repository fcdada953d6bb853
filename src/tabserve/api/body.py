"""Reading request bodies within the size limit, before anything is parsed."""

from __future__ import annotations

from starlette.requests import Request

from tabserve.errors import InvalidInput, PayloadTooLarge


def _too_large(limit: int, size: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {size} bytes; the limit is {limit} bytes: send fewer rows per request",
        limit=limit,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it (413) as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length is checked before reading; a chunked body is counted as it arrives.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit, declared)
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, f"more than {limit}")
        chunks.append(chunk)
    return b"".join(chunks)
