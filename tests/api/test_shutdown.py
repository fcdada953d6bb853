"""SIGTERM on a real server: readiness turns 503 at once, in-flight requests finish, the process exits 0 within
the grace period, with one worker or several."""

from __future__ import annotations

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
