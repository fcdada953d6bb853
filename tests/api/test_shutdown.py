"""SIGTERM on a real server: readiness turns 503 at once, in-flight requests finish, the process exits 0 within
the grace period, with one worker or several."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, tabserve_cmd

pytestmark = pytest.mark.slow
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
BODY = json.dumps({"data": ROW}).encode()


@contextmanager
def server(bundle: Path, tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str, int]]:
    port = free_port()
    log = (tmp_path / f"server-{port}.log").open("w")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(tabserve_cmd("serve", str(bundle), "--port", str(port), "--host", "127.0.0.1",
                                         "--no-access-log", *args),
                            env={**os.environ, "TABSERVE_HOME": str(tmp_path)}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, in_a_row = time.monotonic() + 90, 0
        while in_a_row < 4:
            assert proc.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            assert time.monotonic() < deadline, "server not ready in time"
            try:
                in_a_row = in_a_row + 1 if httpx.get(f"{base}/readyz", timeout=1).status_code == 200 else 0
            except httpx.TransportError:
                in_a_row = 0
                time.sleep(0.1)
        yield proc, base, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def start_request(port: int) -> socket.socket:
    """A prediction whose body is only half sent: in flight until ``finish_request``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode()
    sock.sendall(head + BODY[:10])
    return sock


def finish_request(sock: socket.socket) -> tuple[int, dict]:
    sock.sendall(BODY[10:])
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def wait_exit(proc: subprocess.Popen, within: float) -> tuple[int, float]:
    t0 = time.monotonic()
    code = proc.wait(timeout=within)
    return code, time.monotonic() - t0


def test_in_flight_requests_finish_and_the_process_exits_0(demo_bundle, tmp_path):
    with server(demo_bundle, tmp_path) as (proc, _, port):
        sock = start_request(port)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for the request
        status, body = finish_request(sock)
        assert status == 200 and isinstance(body["prediction"], float)
        code, took = wait_exit(proc, 15)
        assert code == 0 and took < 10


def test_readiness_turns_503_at_once_while_requests_are_still_served(demo_bundle, tmp_path):
    with server(demo_bundle, tmp_path, "--shutdown-delay-s", "3") as (proc, base, _):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(f"{base}/readyz", timeout=2)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        v2 = httpx.get(f"{base}/v2/health/ready", timeout=2)
        assert v2.status_code == 503 and "shutting down" in v2.json()["error"]
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        assert httpx.post(f"{base}/api/v1/predict", json={"data": ROW}, timeout=2).status_code == 200
        code, took = wait_exit(proc, 20)
        assert code == 0 and took < 10


def test_a_request_that_never_finishes_is_cut_at_the_grace_period(demo_bundle, tmp_path):
    with server(demo_bundle, tmp_path, "--shutdown-grace-s", "1") as (proc, _, port):
        sock = start_request(port)  # never completed
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code == 0 and time.monotonic() - t0 < 6
        sock.close()


def test_several_workers_drain_and_exit_0(demo_bundle, tmp_path):
    with server(demo_bundle, tmp_path, "--workers", "2", "--shutdown-delay-s", "2") as (proc, base, _):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        statuses = {httpx.get(f"{base}/readyz", timeout=2).status_code for _ in range(6)}
        assert statuses == {503}
        code, took = wait_exit(proc, 30)
        assert code == 0 and took < 20


# -- every request accepted before SIGTERM is answered -----------------------------------------------------------

async def _request_around_sigterm(port: int, late_s: float, whole_late: bool) -> tuple[int, bytes]:
    """A prediction on a connection opened now; its request (or the end of its body) is sent ``late_s`` later,
    before or after the SIGTERM. Returns (status, body); status 0: no answer (a reset or a close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY))
    try:
        if not whole_late:
            writer.write(head + BODY[:10])
        await asyncio.sleep(late_s)
        writer.write(BODY[10:] if not whole_late else head + BODY)
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = next(int(line.split(b":")[1]) for line in status_line.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return int(status_line.split(b" ")[1]), await reader.readexactly(length)
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0, b""
    finally:
        writer.close()


@pytest.mark.parametrize("sigterm_after_s", [0.01, 0.05, 0.1])
def test_every_request_accepted_before_sigterm_is_answered(demo_bundle, tmp_path, sigterm_after_s):
    """50 connections opened, SIGTERM 10, 50 or 100 ms later; each sends its request (half of them only its
    last body bytes) at some point within 200 ms, many after the signal. uvicorn alone closed or reset up to
    28 of them; every one must get its 200, and the process exit 0."""
    with server(demo_bundle, tmp_path) as (proc, _, port):
        async def run() -> list[tuple[int, bytes]]:
            late = [0.2 * i / 50 for i in range(50)]
            requests = [asyncio.create_task(_request_around_sigterm(port, s, i % 2 == 0)) for i, s in enumerate(late)]
            await asyncio.sleep(sigterm_after_s)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*requests)

        answers = asyncio.run(run())
        assert [status for status, _ in answers] == [200] * 50
        assert all(isinstance(json.loads(body)["prediction"], float) for _, body in answers)
        code, _ = wait_exit(proc, 20)
        assert code == 0


def test_requests_cut_by_the_grace_period_get_a_json_503_with_retry_after(demo_bundle, tmp_path):
    """Requests still running when the grace runs out are answered 503 (JSON, Retry-After, the request id),
    never uvicorn's plain-text 500; so is a request whose head was still arriving."""
    with server(demo_bundle, tmp_path, "--shutdown-grace-s", "0.5") as (proc, _, port):
        socks = [start_request(port) for _ in range(10)]  # bodies never finished
        head = socket.create_connection(("127.0.0.1", port), timeout=20)
        head.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\n")  # a head never finished
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        data = head.recv(65536)
        assert data.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in data.lower(), data
        assert "shutting down" in json.loads(data.partition(b"\r\n\r\n")[2])["error"]
        head.close()
        for sock in socks:
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            sock.close()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().lower().split("\r\n")
            assert lines[0].startswith("http/1.1 503"), data
            assert "retry-after: 1" in lines and "content-type: application/json" in lines
            answer = json.loads(body)
            assert "shutting down" in answer["error"] and f"x-request-id: {answer['request_id']}" in lines
        code, _ = wait_exit(proc, 15)
        assert code == 0
