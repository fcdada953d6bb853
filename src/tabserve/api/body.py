"""Reading request bodies within the size limit and the memory budget, before anything is parsed (from ASGI)."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.types import Receive, Scope

from tabserve.core.quoting import quoted
from tabserve.errors import ClientGone, InvalidInput, Overloaded, PayloadTooLarge, UnsupportedEncoding
from tabserve.settings import Settings

_FIRST_PEEK = 1 << 20  # a body up to this size is read whole before anything looks at it
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


class BodyBudget:
    """The bytes of request bodies this process holds at once, read or being decoded, across all requests.

    Each large body is charged before it is read (its Content-Length) or as it arrives (chunked), and again
    for its inflated copy; a request that would take the total past ``limit`` gets 503 with Retry-After, as
    nginx's limit_conn does, instead of every concurrent parse piling up in memory. Bodies up to
    ``free_bytes`` are never charged nor refused: one-row traffic is never shed because of large bodies.
    A body alone is always admitted (``max_body_bytes`` bounds its size), so a limit below it sheds
    concurrency, never a request outright.
    """

    def __init__(self, limit: int, free_bytes: int, on_shed: Callable[[str], None] | None = None) -> None:
        self.limit = limit  # 0: no limit
        self.free_bytes = free_bytes
        self.held = 0  # touched on the event loop only
        self.on_shed = on_shed  # metrics.shed(reason)

    @classmethod
    def from_settings(cls, settings: Settings, on_shed: Callable[[str], None] | None = None) -> BodyBudget:
        return cls(settings.max_inflight_body_bytes, settings.inline_max_bytes, on_shed)

    def lease(self) -> BodyLease:
        return BodyLease(self)


class BodyLease:
    """One request's share of the budget, released (``release``) when the request ends, however it ends."""

    __slots__ = ("budget", "bytes")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def charge(self, size: int) -> None:
        """Hold ``size`` more bytes; ``Overloaded`` (503) when they would take the budget past its limit."""
        budget = self.budget
        if not budget.limit or size <= 0:
            return
        if budget.held + size > budget.limit and budget.held > self.bytes:
            if budget.on_shed is not None:
                budget.on_shed("body_budget")
            raise Overloaded(
                f"request bodies of {budget.held} bytes are being read or decoded; this one's {size} more bytes "
                f"would pass the limit of {budget.limit} bytes (max_inflight_body_bytes): retry shortly, or send "
                "smaller batches", limit=budget.limit)
        budget.held += size
        self.bytes += size

    def release(self) -> None:
        self.budget.held -= self.bytes
        self.bytes = 0


async def receive_body(scope: Scope, receive: Receive, limit: int, lease: BodyLease | None = None,
                       peek: Callable[[bytes], Awaitable[None]] | None = None) -> bytes:
    """The whole body, refusing it (413) as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length is checked before reading; a chunked body is counted as it arrives. With a
    ``lease``, a body over the budget's free size is charged to it first (503 before reading when refused).
    ``peek`` sees what has arrived of an uncompressed body each time it doubles from 1 MiB, and may refuse it
    by raising: the rest is then never held (the server discards it as it arrives).
    """
    declared = header(scope, b"content-length")
    free = lease.budget.free_bytes if lease is not None else limit
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(f"invalid Content-Length header {quoted(declared)}")
        expected = int(declared)
        if expected > limit:
            raise _too_large(limit, declared)
        if expected > free:
            lease.charge(expected)  # type: ignore[union-attr]
            free = limit  # charged in full: what arrives is within it (the server enforces Content-Length)
    chunks: list[bytes] = []
    size = 0
    encoding = header(scope, b"content-encoding")
    if peek is not None and encoding is not None and encoding.strip().lower() not in ("", "identity"):
        peek = None  # compressed bytes say nothing yet
    next_peek = _FIRST_PEEK
    while True:
        message = await receive()
        if message["type"] != "http.request":  # a partial body must never be scored as if it were whole
            declared_note = f" of {declared}" if declared is not None else ""
            raise ClientGone(f"the client closed the connection after {size}{declared_note} bytes of the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, f"more than {limit}")
        if size > free:  # a chunked body past the free size: charged as it arrives
            lease.charge(size - lease.bytes)  # type: ignore[union-attr]
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
        if peek is not None and size >= next_peek:
            chunks = [b"".join(chunks)]
            await peek(chunks[0])
            next_peek = 2 * size
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.scope, request.receive, limit)


def decompress_body(body: bytes, encoding: str | None, limit: int, lease: BodyLease | None = None) -> bytes:
    """A body sent with ``Content-Encoding: gzip`` or ``deflate``, inflated to at most ``limit`` bytes: a small
    compressed body that would inflate past the limit (a "zip bomb") is refused (413) without inflating it all.
    With a ``lease``, an inflated body over the budget's free size is charged to it too."""
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
    if lease is not None and len(out) > lease.budget.free_bytes:
        lease.charge(len(out))
    return out
