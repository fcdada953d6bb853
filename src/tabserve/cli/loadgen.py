"""A small closed-loop HTTP/1.1 load generator for ``tabserve bench --url --concurrency N``.

Each connection sends one request, waits for the whole response, and sends the next (keep-alive), like
``wrk``. It is plain asyncio so that it needs nothing installed; one Python process tops out around a few
thousand requests/s, so for measuring the server's ceiling use ``wrk`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)


def _request_bytes(host: str, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length; its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, payload: bytes, stop_at: float, limit: int | None,
                      result: LoadResult, counter: list[int]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.errors += 1
        return
    try:
        while time.perf_counter() < stop_at and (limit is None or counter[0] < limit):
            counter[0] += 1
            t = time.perf_counter()
            writer.write(payload)
            try:
                status = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                return
            result.latencies_s.append(time.perf_counter() - t)
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


def run_load(url: str, path: str, body: bytes, *, concurrency: int, duration_s: float,
             requests: int | None = None) -> LoadResult:
    """Send ``body`` to ``url + path`` over ``concurrency`` keep-alive connections until ``duration_s`` passes
    (or ``requests`` have been sent)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = _request_bytes(f"{host}:{port}", parts.path.rstrip("/") + path, body)
    result = LoadResult()

    async def main() -> None:
        counter = [0]
        t0 = time.perf_counter()
        stop_at = t0 + duration_s
        await asyncio.gather(*(_connection(host, port, payload, stop_at, requests, result, counter)
                               for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - t0

    asyncio.run(main())
    return result
