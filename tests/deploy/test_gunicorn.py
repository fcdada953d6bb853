"""docs/integration.md's gunicorn launcher, ``gunicorn -k uvicorn_worker.UvicornWorker -w 2
'tabserve.api.app:create_app_from_env()'``: it serves, every scrape of /metrics counts the requests of both
workers (the shared multiprocess folder), and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observability.test_foreign_launcher import PREDICTIONS, SCRAPES, predictions_counted
from tests.servers import READY_IN_A_ROW, free_port

pytestmark = pytest.mark.slow


@pytest.fixture()
def gunicorn_workers(demo_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    pytest.importorskip("uvicorn_worker", reason="gunicorn and uvicorn-worker are in the dev extra")
    port = free_port()
    foreign = ("PROMETHEUS_MULTIPROC_DIR", "_TABSERVE_METRICS_PREPARED")
    env = {k: v for k, v in os.environ.items() if k not in foreign and not k.startswith("TABSERVE_")}
    env.update(TABSERVE_MODEL_PATH=str(demo_bundle), TABSERVE_HOME=str(tmp_path / "home"),
               TABSERVE_PRETRAIN="false")
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker",
                             "-w", "2", "-b", f"127.0.0.1:{port}", "tabserve.api.app:create_app_from_env()"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, in_a_row = time.monotonic() + 120, 0  # watchdog only
        while in_a_row < READY_IN_A_ROW:
            assert proc.poll() is None, _read(log)
            assert time.monotonic() < deadline, "not ready in time:\n" + _read(log)
            try:
                in_a_row = in_a_row + 1 if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                in_a_row = 0
            if not in_a_row:
                time.sleep(0.2)
        yield base, tmp_path / "home", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output = _read(log)
        log.close()
    assert "metrics_shared" in output, output
    assert "Traceback" not in output, output


def _read(log) -> str:
    log.seek(0)
    return log.read()


def test_two_gunicorn_workers_count_every_prediction_and_stop_on_sigterm(
        gunicorn_workers: tuple[str, Path, subprocess.Popen]):
    base, home, proc = gunicorn_workers
    for _ in range(PREDICTIONS):  # a fresh connection each: both workers accept on the shared socket
        response = httpx.post(f"{base}/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}, timeout=10)
        assert response.status_code == 200, response.text
    # A worker records a request just after writing its answer (as in test_foreign_launcher): wait for the
    # last records before the scrapes that must all agree (watchdog only).
    deadline = time.monotonic() + 10
    while predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) < PREDICTIONS \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = [predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) for _ in range(SCRAPES)]
    assert counts == [PREDICTIONS] * SCRAPES
    (folder,) = (home / "metrics").glob("launcher-*")  # named after gunicorn's arbiter, the workers' parent
    assert len({p.name.rsplit("_", 1)[-1] for p in folder.glob("*.db")}) >= 2, sorted(folder.iterdir())

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # watchdog only: gunicorn's graceful stop, then both workers' shutdown
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/readyz", timeout=2)
