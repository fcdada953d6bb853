"""Helpers the benchmark scripts share: a free local port, a process tree's resident memory, a served model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and all its descendants (workers, a Ray instance's daemons)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def start_server(bundle: Path, home: Path, log: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    """``tabserve serve BUNDLE`` on 127.0.0.1 and a free port (no access log), once it answers /readyz."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tabserve", "serve", str(bundle), "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log", *flags],
                            env={**os.environ, "TABSERVE_HOME": str(home)}, stdout=log.open("a"),
                            stderr=subprocess.STDOUT)
    wait_ready(proc, port, log)
    return proc, port


def wait_ready(proc: subprocess.Popen, port: int, log: Path, within_s: float = 90) -> None:
    """Until ``proc`` answers GET /readyz with 200 on ``port`` (exits the script if it dies or never does)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server was not ready within {within_s:g} s")
