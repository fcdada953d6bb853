"""`tabserve registry ui` runs `mlflow ui`, which starts a server process of its own: a SIGTERM to tabserve stops
them all and frees the port (before, tabserve died alone and left the UI running)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servers import free_port

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # starts an MLflow server

# The real `tabserve registry ui`, with the check that the UI's web page is installed (full mlflow, not the
# skinny client of the dev extra) answered yes: `mlflow ui` itself runs with skinny + Flask.
PROGRAM = ("import sys, tabserve.cli.registry as r; r._ui_installed = lambda: True; "
           "from tabserve.cli import main; sys.exit(main(sys.argv[1:]))")


def test_sigterm_stops_the_mlflow_ui_and_its_server_processes(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, "registry", "ui", "--home", str(tmp_path / "home"),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 300  # a watchdog: MLflow's first start creates its database
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the MLflow UI did not answer"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert descendants, "mlflow ui runs as a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        groups = {p.pid for p in psutil.Process(proc.pid).children()} if proc.poll() is None else set()
        if proc.poll() is None:
            proc.kill()
        for group in groups:  # nothing of this test outlives it, whatever failed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
