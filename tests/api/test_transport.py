"""Hostile and slow clients on a real server (raw sockets on 127.0.0.1): oversized request heads are refused
with 431, heads and bodies that stall get 408, and stalled uploads never take the concurrency slots that
complete requests need."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import tabserve
from tests.servers import free_port, running_server

pytestmark = pytest.mark.slow
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
BODY = json.dumps({"data": ROW}).encode()
PREDICT_HEAD = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(BODY))
CHUNKED_HEAD = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


def head_with(extra_header_bytes: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: tabserve\r\nX-Padding: " + b"a" * extra_header_bytes + b"\r\n\r\n"


def read_response(sock: socket.socket, within: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-case headers, body); the watchdog bound fails a server that never answers."""
    sock.settimeout(within)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def closed_by_server(sock: socket.socket, within: float = 10) -> bool:
    """Whether the server closes the connection (EOF, or a reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def predict(base: str) -> int:
    return httpx.post(f"{base}/api/v1/predict", json={"data": ROW}, timeout=10).status_code


@pytest.fixture
def serve(demo_bundle: Path, tmp_path: Path):
    @contextmanager
    def start(*args: str, **env: str) -> Iterator[tuple[str, int]]:
        env = {"TABSERVE_HOME": str(tmp_path), "TABSERVE_ACCESS_LOG": "false", **env}
        with running_server(str(demo_bundle), *args, env=env) as base:
            yield base, int(base.rsplit(":", 1)[1])

    return start


# -- the size of a request head ----------------------------------------------------------------------------------

def test_a_head_over_the_limit_is_431_at_once_and_others_are_still_served(serve):
    with serve() as (base, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head_with(100 * 1024))
        status, headers, body = read_response(sock)
        assert status == 431
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert "65536 bytes" in json.loads(body)["error"]
        assert closed_by_server(sock)
        assert predict(base) == 200


def test_a_head_within_the_limit_is_served(serve):
    with serve() as (_, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head_with(60 * 1024))
        assert read_response(sock)[0] == 200


def test_a_body_read_together_with_a_head_near_the_limit_is_not_counted_as_head(serve):
    """A 60 KiB head and a 200 KiB body in one write: over 64 KiB together, yet only the head counts."""
    rows = json.dumps({"data": [ROW] * 8000}).encode()
    assert len(rows) > 100 * 1024
    head = (b"POST /api/v1/predict/batch HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
            b"X-Padding: " + b"a" * 60 * 1024 + b"\r\nContent-Length: %d\r\n\r\n" % len(rows))
    with serve() as (_, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + rows)
        status, _, body = read_response(sock)
        assert status == 200 and len(json.loads(body)["predictions"]) == 8000


def test_a_huge_head_is_refused_without_being_read(serve):
    """32 MB of one header: refused when the limit is passed (the audit's server read all of it, answered 200
    after 2 s and stalled everyone else); the client still reads the answer, not a reset."""
    with serve("--max-header-bytes", "8192") as (base, port), socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            sock.sendall(head_with(32 * 1024 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: also right, as long as the answer came first
        status, _, body = read_response(sock)
        assert status == 431 and "8192 bytes" in json.loads(body)["error"]
        assert predict(base) == 200


# -- slow heads and bodies ---------------------------------------------------------------------------------------

def test_a_head_sent_byte_by_byte_gets_408_past_the_header_timeout(serve):
    with serve("--header-timeout-s", "1") as (base, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        head = head_with(10)
        deadline = time.monotonic() + 10  # a watchdog, not a timing: the 408 comes after about a second
        for byte in head[:-4]:
            assert time.monotonic() < deadline, "no 408 while a head was dripping in"
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)
            if _readable(sock):
                break
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert "header_timeout_s" in json.loads(body)["error"]
        assert closed_by_server(sock)
        assert predict(base) == 200


def test_a_stalled_chunked_body_gets_408_and_the_connection_closes(serve):
    with serve("--body-timeout-s", "1") as (base, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(CHUNKED_HEAD + b"5\r\n" + BODY[:5] + b"\r\n")  # and never the rest
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert "body_timeout_s" in json.loads(body)["error"]
        assert closed_by_server(sock)
        assert predict(base) == 200


def test_a_slow_body_that_keeps_coming_is_not_cut(serve):
    """The body timeout is the longest pause between reads (nginx's client_body_timeout), not the upload's
    whole duration: 4 pauses of 0.5 s under a 1 s timeout."""
    with serve("--body-timeout-s", "1") as (_, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(CHUNKED_HEAD)
        for part in (BODY[:5], BODY[5:10], BODY[10:15], BODY[15:]):
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            time.sleep(0.5)
        sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and isinstance(json.loads(body)["prediction"], float)


def test_a_keep_alive_connection_idle_between_requests_is_not_408(serve):
    with serve("--header-timeout-s", "1") as (_, port), socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(2):
            sock.sendall(PREDICT_HEAD + BODY)
            assert read_response(sock)[0] == 200
            time.sleep(1.5)  # longer than the header timeout, shorter than uvicorn's 5 s keep-alive


def test_a_connection_that_never_sends_is_closed_without_an_answer(serve):
    with serve("--header-timeout-s", "1") as (_, port), socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        assert sock.recv(65536) == b""


def test_slow_clients_do_not_stall_others(serve):
    """50 heads dripping in and 20 stalled bodies held open while 100 predictions are made: all answered."""
    with serve(TABSERVE_MAX_CONCURRENT_REQUESTS="5", TABSERVE_BODY_TIMEOUT_S="30") as (base, port):
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            for s in slow:
                s.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: ")
            for s in stalled:
                s.sendall(PREDICT_HEAD + BODY[:10])
            time.sleep(0.5)  # the stalled bodies have reached the app and wait for the rest
            with httpx.Client(base_url=base, timeout=10) as client:
                statuses = [client.post("/api/v1/predict", json={"data": ROW}).status_code for _ in range(100)]
            assert statuses == [200] * 100
            for s in stalled:  # and each stalled one is still served when it finishes
                s.sendall(BODY[10:])
                assert read_response(s)[0] == 200
        finally:
            for s in slow + stalled:
                s.close()


def _predict_scope(body_length: int | None) -> dict:
    headers = [(b"content-type", b"application/json")]
    if body_length is not None:
        headers.append((b"content-length", str(body_length).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/api/v1/predict", "raw_path": b"/api/v1/predict", "root_path": "", "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}


async def _request(app, release: asyncio.Event, answers: list, declared: bool) -> None:
    """A prediction whose last body bytes arrive once ``release`` is set; with no declared body it counts at
    once (and waits in the app), with one it counts when the body is in."""
    async def receive() -> dict:
        await release.wait()
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answers.append([message["status"]])
        elif message["type"] == "http.response.body":
            answers[-1].append(json.loads(message["body"]))

    await app(_predict_scope(len(BODY) if declared else None), receive, send)


def test_a_request_counts_against_the_limit_once_its_body_is_in(demo_model):
    """Limit 2: three uploads waiting for their bodies take no slot (a complete request gets 200); when the
    limit is then full, an upload that completes is shed with 503 and Retry-After's body, the others served."""
    app = tabserve.create_app(tabserve.Settings(max_concurrent_requests=2, access_log=False), model=demo_model)

    async def run() -> None:
        uploads, held = asyncio.Event(), asyncio.Event()
        upload_answers: list = []
        held_answers: list = []
        upload_tasks = [asyncio.create_task(_request(app, uploads, upload_answers, True)) for _ in range(3)]
        await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tabserve") as client:
            assert (await client.post("/api/v1/predict", json={"data": ROW})).status_code == 200
            held_tasks = [asyncio.create_task(_request(app, held, held_answers, False)) for _ in range(2)]
            await asyncio.sleep(0.05)  # two requests in flight: the limit
            uploads.set()
            await asyncio.gather(*upload_tasks)
            assert [a[0] for a in upload_answers] == [503, 503, 503]
            assert "the limit is 2" in upload_answers[0][1]["detail"]
            held.set()
            await asyncio.gather(*held_tasks)
            assert [a[0] for a in held_answers] == [200, 200]
            assert (await client.post("/api/v1/predict", json={"data": ROW})).status_code == 200

    asyncio.run(run())


# -- plain uvicorn with the hardened protocol (h11 too) ------------------------------------------------------

def _cli_takes_a_protocol_class() -> bool:
    """uvicorn's ``--http`` takes an import string (not only auto/h11/httptools) in newer releases."""
    import click
    from uvicorn.main import main

    option = next(p for p in main.params if p.name == "http")
    return not isinstance(option.type, click.Choice)


@pytest.mark.skipif(not _cli_takes_a_protocol_class(), reason="this uvicorn's --http takes auto|h11|httptools "
                    "only; `tabserve serve` (or uvicorn.Config(http=...)) applies the limits")
@pytest.mark.parametrize("protocol", ["HttpToolsProtocol", "H11Protocol"])
def test_plain_uvicorn_with_the_hardened_protocol(demo_bundle, tmp_path, protocol):
    port = free_port()
    env = {**os.environ, "TABSERVE_HOME": str(tmp_path), "TABSERVE_MODEL_PATH": str(demo_bundle),
           "TABSERVE_HEADER_TIMEOUT_S": "1", "TABSERVE_ACCESS_LOG": "false"}
    log = (tmp_path / "uvicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "tabserve.api.app:create_app_from_env",
                             "--port", str(port), "--http", f"tabserve.api.transport:{protocol}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "uvicorn.log").read_text()
            assert time.monotonic() < deadline, "uvicorn not ready in time"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head_with(100 * 1024))
            assert read_response(sock)[0] == 431
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ")
            status, _, body = read_response(sock)
            assert status == 408 and "header_timeout_s" in json.loads(body)["error"]
        assert predict(f"http://127.0.0.1:{port}") == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
