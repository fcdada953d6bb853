"""MLflow registries for tests: the embedded SQLite store under a tmp TABSERVE_HOME, or a real ``mlflow server``.

Creating an MLflow SQLite database runs its migrations (seconds); ``fresh_home`` copies one migrated empty
database per test instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

_TEMPLATES: dict[Path, Path] = {}  # pytest's base temp folder -> the migrated empty database made there


def empty_store(factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database, made once per test session."""
    from tabserve.registry.mlflow import client

    base = factory.getbasetemp()
    if base not in _TEMPLATES:
        db = factory.mktemp("mlflow-template") / "mlflow.db"
        client(f"sqlite:///{db}").search_registered_models()
        _TEMPLATES[base] = db
    return _TEMPLATES[base]


def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: pytest.TempPathFactory) -> Path:
    """A TABSERVE_HOME whose embedded registry is empty (MLFLOW_TRACKING_URI unset). Use it in a fixture:
    ``registry_home = pytest.fixture(lambda tmp_path, monkeypatch, tmp_path_factory: fresh_home(...))``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    (home / "mlflow").mkdir(parents=True)
    shutil.copy(empty_store(factory), home / "mlflow" / "mlflow.db")
    monkeypatch.setenv("TABSERVE_HOME", str(home))
    return home


def server_available() -> bool:
    """``mlflow server`` runs with mlflow-skinny once Flask and Flask-CORS are installed (the dev extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("mlflow", "flask", "flask_cors"))


@contextmanager
def mlflow_server(folder: Path, timeout: float = 120, port: int | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 and a free port (or ``port``: the same server started again):
    SQLite backend and artifacts under ``folder``, artifacts proxied by the server (``mlflow-artifacts:/``);
    stopped on exit. Yields its URL."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in the finally below)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts")]
    # The job runner (for GenAI evaluation jobs) needs huey, which the skinny install lacks; nothing here uses it.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("mlflow server not ready in time")
            time.sleep(0.3)
        yield base
    finally:
        # The server runs its workers as child processes: stop the whole group it leads (its own session).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
