"""Reading request bodies within the size limit, before anything is parsed (straight from ASGI)."""

from __future__ import annotations

import zlib

from starlette.requests import Request
from starlette.types import Receive, Scope

from tabserve.core.quoting import quoted
from tabserve.errors import InvalidInput, PayloadTooLarge, UnsupportedEncoding

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # HTTP's
# "deflate" is the zlib format


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
            raise InvalidInput(f"invalid Content-Length header {quoted(declared)}")
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


def decompress_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A body sent with ``Content-Encoding: gzip`` or ``deflate``, inflated to at most ``limit`` bytes: a small
    compressed body that would inflate past the limit (a "zip bomb") is refused (413) without inflating it all."""
    if encoding is None:
        return body
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {quoted(encoding)}; send gzip, deflate or an "
                                  "uncompressed body")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the {encoding} request body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"the decompressed request body is over the limit of {limit} bytes: send fewer rows "
                              "per request", limit=limit)
    return out
