"""The harness drives the gRPC row (benchmarks/peers/tabserve-grpc: driver.py instead of request.lua, h2load for
the loads): a tiny run with 1-second loads checks that the row started, answered scikit-learn's predictions for
1 and 1000 rows over gRPC, was loaded with no error counted and stopped. Numbers are not checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "benchmarks" / "peers"
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_short_run_of_the_grpc_row_verifies_loads_and_reports(tmp_path):
    missing = [tool for tool in ("h2load", "luajit", "taskset") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install nghttp2-client; benchmarks/peers/setup.sh)")
    pytest.importorskip("grpc")
    cpus = sorted(os.sched_getaffinity(0))
    env = {**os.environ, "PEERS": str(tmp_path), "TABSERVE_VENV": str(BIN.parent)}
    subprocess.run([sys.executable, PEERS / "make_model.py", "--out", tmp_path / "model", "--trees", "5",
                    "--samples", "2000"], check=True, capture_output=True, timeout=120)
    (tmp_path / "sample.csv").write_text("f0,f1,f2,f3,f4,f5,f6,f7\n" + (tmp_path / "model" / "rows1000.csv").read_text())
    subprocess.run([BIN / "tabserve", "import", tmp_path / "model" / "model.joblib", "--trust-pickle", "--sample",
                    tmp_path / "sample.csv", "--name", "rf", "--out", tmp_path / "tabserve" / "bundle"],
                   check=True, capture_output=True, timeout=120)

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, PEERS / "run.py", "--rounds", "1", "--duration", "1", "--warmup", "0",
                          "--server-cpu", str(cpus[0]), "--wrk-cpu", str(cpus[-1]), "--python", sys.executable,
                          "--no-inproc", "--out", out, "tabserve-grpc"], env=env, capture_output=True, text=True,
                         timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (result,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    assert result["ok"], result.get("error")
    assert result["verify1"].startswith("ok") and result["verify1000"].startswith("ok")
    assert result["non2xx"] == 0 and result["sock_err"] == 0, result
    assert min(result[k]["requests"] for k in ("c1", "c32", "batch")) > 0
    assert result["c32"]["p99_us"] >= result["c32"]["p50_us"] > 0
    assert "leftover_pids" not in result
    line = next(x for x in (out / "table.md").read_text().splitlines() if x.startswith("| tabserve-grpc "))
    assert line.endswith("| 1/1 |"), line
