"""docs/integration.md's gunicorn launcher, ``gunicorn -k uvicorn_worker.UvicornWorker -w 2
'tabserve.api.app:create_app_from_env()'``: it serves, every scrape of /metrics counts the requests of both
workers (the shared multiprocess folder), and SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observability.test_foreign_launcher import PREDICTIONS, SCRAPES, scrapes_counted
from tests.servers import launched_workers, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture()
def gunicorn_workers(demo_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    pytest.importorskip("uvicorn_worker", reason="gunicorn and uvicorn-worker are in the dev extra")
    argv = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b",
            "127.0.0.1:{port}", "tabserve.api.app:create_app_from_env()"]
    with launched_workers(argv, worker_env(demo_bundle, tmp_path / "home")) as launched:
        yield launched.base, tmp_path / "home", launched.proc
    assert "metrics_shared" in launched.output, launched.output
    assert "Traceback" not in launched.output, launched.output


def test_two_gunicorn_workers_count_every_prediction_and_stop_on_sigterm(
        gunicorn_workers: tuple[str, Path, subprocess.Popen]):
    base, home, proc = gunicorn_workers
    for _ in range(PREDICTIONS):  # a fresh connection each: both workers accept on the shared socket
        response = httpx.post(f"{base}/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}, timeout=10)
        assert response.status_code == 200, response.text
    assert scrapes_counted(base) == [PREDICTIONS] * SCRAPES
    (folder,) = (home / "metrics").glob("launcher-*")  # named after gunicorn's arbiter, the workers' parent
    assert len({p.name.rsplit("_", 1)[-1] for p in folder.glob("*.db")}) >= 2, sorted(folder.iterdir())

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # watchdog only: gunicorn's graceful stop, then both workers' shutdown
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/readyz", timeout=2)
