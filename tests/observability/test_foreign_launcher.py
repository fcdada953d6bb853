"""docs/integration.md's launcher, ``uvicorn --factory tabserve.api.app:create_app_from_env --workers 2``: every
scrape of /metrics, whichever worker answers it, counts the requests of both workers."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import launched_workers, worker_env

pytestmark = pytest.mark.slow

PREDICTIONS = 30
SCRAPES = 8


@pytest.fixture()
def uvicorn_workers(demo_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    argv = [sys.executable, "-m", "uvicorn", "--factory", "tabserve.api.app:create_app_from_env", "--workers", "2",
            "--host", "127.0.0.1", "--port", "{port}"]
    with launched_workers(argv, worker_env(demo_bundle, tmp_path / "home")) as launched:
        yield launched.base, tmp_path / "home"
    assert "metrics_shared" in launched.output, launched.output


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
    assert scrapes_counted(base) == [PREDICTIONS] * SCRAPES
    # the workers' files live in one folder named after the launcher process
    (folder,) = (home / "metrics").glob("launcher-*")
    assert len({p.name.rsplit("_", 1)[-1] for p in folder.glob("*.db")}) >= 2, sorted(folder.iterdir())


def scrapes_counted(base: str) -> list[float]:
    """The predictions ``SCRAPES`` scrapes count, once the last records are in. A worker records a request just
    after writing its answer: on a loaded machine it may be descheduled in between, while the other worker
    answers the next scrape. So the first wait for them (watchdog only)."""
    deadline = time.monotonic() + 10
    while predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) < PREDICTIONS \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return [predictions_counted(httpx.get(f"{base}/metrics", timeout=10).text) for _ in range(SCRAPES)]
