"""docs/integration.md's launcher, ``uvicorn --factory tabserve.api.app:create_app_from_env --workers 2``: every
scrape of /metrics, whichever worker answers it, counts the requests of both workers."""

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
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import READY_IN_A_ROW, free_port

pytestmark = pytest.mark.slow

PREDICTIONS = 30
SCRAPES = 8


@pytest.fixture()
def uvicorn_workers(demo_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "_TABSERVE_METRICS_PREPARED")
           and not k.startswith("TABSERVE_")}
    env.update(TABSERVE_MODEL_PATH=str(demo_bundle), TABSERVE_HOME=str(tmp_path / "home"),
               TABSERVE_PRETRAIN="false")
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "tabserve.api.app:create_app_from_env",
                             "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
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
        yield base, tmp_path / "home"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output = _read(log)
        log.close()
    assert "metrics_shared" in output, output


def _read(log) -> str:
    log.seek(0)
    return log.read()


def predictions_counted(text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "tabserve_requests":
            total += sum(s.value for s in family.samples
                         if s.name == "tabserve_requests_total" and s.labels.get("route") == "/api/v1/predict"
                         and s.labels.get("status") == "200")
    return total


def test_every_scrape_counts_the_requests_of_both_workers(uvicorn_workers: tuple[str, Path]):
    base, home = uvicorn_workers
    for _ in range(PREDICTIONS):  # a fresh connection each: the kernel spreads them over both workers
        response = httpx.post(f"{base}/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}, timeout=10)
        assert response.status_code == 200, response.text
    # A worker records a request just after writing its answer: on a loaded machine it may be descheduled in
    # between, while the other worker answers the next scrape. Wait for the last records (watchdog only).
    deadline = time.monotonic() + 10
    while predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) < PREDICTIONS \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = [predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) for _ in range(SCRAPES)]
    assert counts == [PREDICTIONS] * SCRAPES
    # the workers' files live in one folder named after the launcher process
    (folder,) = (home / "metrics").glob("launcher-*")
    assert len({p.name.rsplit("_", 1)[-1] for p in folder.glob("*.db")}) >= 2, sorted(folder.iterdir())
