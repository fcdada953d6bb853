"""Real tabserve servers for tests: a ``tabserve serve`` process on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx

READY_IN_A_ROW = 8  # fresh connections answered 200 by /readyz before a server counts as started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tabserve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tabserve", *args]


@contextmanager
def running_server(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Iterator[str]:
    port = free_port()
    # A file, not a pipe: a server logging thousands of lines while nobody reads a pipe would block on write.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed when the server stops
    proc = subprocess.Popen(tabserve_cmd("serve", *args, "--port", str(port), "--host", "127.0.0.1"),
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        in_a_row = 0  # with several workers, one ready answer may come from a worker whose siblings still load
        while in_a_row < READY_IN_A_ROW:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{_read(log)}")
            try:
                in_a_row = in_a_row + 1 if httpx.get(f"{base}/readyz", timeout=1).status_code == 200 else 0
            except httpx.TransportError:
                in_a_row = 0
            if time.monotonic() > deadline:
                raise AssertionError("server not ready in time")
            if not in_a_row:
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        running_server.last_exit_code = code  # type: ignore[attr-defined]
        running_server.last_output = _read(log)  # type: ignore[attr-defined]
        log.close()


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()


def worker_env(bundle: object, home: object) -> dict[str, str]:
    """The environment of another launcher's workers serving ``bundle``: this process's, less any metrics folder
    and ``TABSERVE_*`` setting of its own."""
    foreign = ("PROMETHEUS_MULTIPROC_DIR", "_TABSERVE_METRICS_PREPARED")
    env = {k: v for k, v in os.environ.items() if k not in foreign and not k.startswith("TABSERVE_")}
    env.update(TABSERVE_MODEL_PATH=str(bundle), TABSERVE_HOME=str(home), TABSERVE_PRETRAIN="false")
    return env


class Launched:
    """A launcher started by ``launched_workers``: its URL, its process, and its output once it stopped."""

    def __init__(self, base: str, proc: subprocess.Popen) -> None:
        self.base = base
        self.proc = proc
        self.output = ""


@contextmanager
def launched_workers(argv: list[str], env: dict[str, str]) -> Iterator[Launched]:
    """Another launcher (``uvicorn --workers``, gunicorn) started with ``argv`` ("{port}" in it becomes a free
    port), once /readyz answered ``READY_IN_A_ROW`` fresh connections in a row; SIGTERM at the end (killed if it
    lingers), then ``output`` holds what it printed."""
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in argv], env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    launched = Launched(f"http://127.0.0.1:{port}", proc)
    try:
        deadline, in_a_row = time.monotonic() + 120, 0  # watchdog only
        while in_a_row < READY_IN_A_ROW:
            assert proc.poll() is None, _read(log)
            assert time.monotonic() < deadline, "not ready in time:\n" + _read(log)
            try:
                in_a_row = in_a_row + 1 if httpx.get(f"{launched.base}/readyz", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                in_a_row = 0
            if not in_a_row:
                time.sleep(0.2)
        yield launched
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        launched.output = _read(log)
        log.close()
