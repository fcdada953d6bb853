"""A full disk under the metrics folder or the bundle folder: the server keeps answering with its metrics
degraded (one log line per worker, a gauge and a counter) instead of dying of SIGBUS, and ``tabserve train``
says where it ran out of space and exits 2. The full disk is a tiny tmpfs, mounted when the tests may (root)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tabserve.cli import main
from tests.servers import running_server

pytestmark = pytest.mark.slow

ROW = {"data": [0.1, 0.2, 0.3, 0.4, 0.5]}


def _predict(base: str) -> httpx.Response:
    """One prediction; a worker still loading its model (several workers start one by one) is asked again."""
    for _ in range(100):
        answer = httpx.post(f"{base}/api/v1/predict", json=ROW, timeout=10)
        if answer.status_code != 503 or "model_not_ready" not in answer.text:
            return answer
        time.sleep(0.1)
    return answer


@contextmanager
def full_disk(folder: Path, size_kib: int = 64, inodes: int | None = None) -> Iterator[Path]:
    """A ``size_kib`` tmpfs at ``folder``, filled to the last block (and the last of its ``inodes``, when
    given: not even a folder can be made there); unmounted on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size_kib}k" + (f",nr_inodes={inodes}" if inodes else "")
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                 check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small filesystem here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (root is needed): {mounted.stderr.strip()}")
    try:
        with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):  # until it is full
            while True:
                f.write(b"\0" * 4096)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True, timeout=30)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_metrics_folder_degrades_the_metrics_and_the_server_keeps_answering(workers, demo_bundle,
                                                                                  tmp_path):
    with full_disk(tmp_path / "metrics") as folder, running_server(
            str(demo_bundle), "--metrics-dir", str(folder), "--workers", str(workers), "--no-access-log") as base:
        answers = [_predict(base) for _ in range(8)]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    assert "tabserve_metrics_degraded 1.0" in metrics
    assert "tabserve_metrics_storage_failures_total" in metrics
    assert running_server.last_exit_code == 0  # stopped by the test, not killed by a SIGBUS
    log = [json.loads(line) for line in running_server.last_output.splitlines() if line.startswith("{")]
    degraded = [e for e in log if e.get("event") == "metrics_degraded"]
    # One line per worker process at most, not one per request. (On a loaded machine uvicorn may replace a
    # worker that misses its 5 s health ping while importing: the count is of processes started.)
    started = [e for e in log if str(e.get("event")).startswith("Started server process")]
    assert 1 <= len(degraded) <= len(started)
    assert degraded[0]["folder"] == str(folder) and degraded[0]["free_bytes"] == 0
    assert "No space left" in degraded[0]["error"]


def test_a_metrics_folder_that_cannot_be_made_leaves_each_worker_its_own_metrics(demo_bundle, tmp_path):
    with full_disk(tmp_path / "disk", inodes=2) as disk, running_server(
            str(demo_bundle), "--metrics-dir", str(disk / "metrics"), "--workers", "2", "--no-access-log") as base:
        answers = [_predict(base) for _ in range(4)]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert [a.status_code for a in answers] == [200] * 4
    assert "tabserve_metrics_degraded 1.0" in metrics and "tabserve_requests_total" in metrics
    assert running_server.last_exit_code == 0
    lines = [line for line in running_server.last_output.splitlines() if "metrics_degraded" in line]
    assert len(lines) == 1 and str(disk / "metrics") in lines[0] and "No space left" in lines[0]


def test_train_on_a_full_disk_names_the_path_and_exits_2(tmp_path, capsys):
    with full_disk(tmp_path / "disk", size_kib=128) as folder:
        out = folder / "demo" / "1"
        code = main(["train", "--demo", "--out", str(out)])
        err = capsys.readouterr().err
        assert not out.exists()  # nothing half-written is left to serve
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("tabserve train: error")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"no space left on the disk writing {out}" in lines[0] and "KiB free" in lines[0]
