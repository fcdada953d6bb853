"""The side-by-side harness (benchmarks/peers/run.py) works from a clone: a tiny end-to-end run with a small
model of the benchmark's shape, the asgi-floor and tabserve rows, 1-second loads. Numbers are not checked
(speed is what the harness prints, not a test); what is checked is that every row started, answered
correctly, was loaded and stopped, and that the report has the table and the issue #17 ratios."""

from __future__ import annotations

import importlib.util
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
ROWS = ["asgi-floor", "tabserve"]  # each tabserve row costs a cold start: one keeps the test near 30 s


def _verify_module():
    spec = importlib.util.spec_from_file_location("peers_verify", PEERS / "verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_correctness_check_accepts_the_prediction_in_any_shape_and_rejects_a_wrong_one():
    check = _verify_module().check
    assert check(b'{"predictions": [[1.0], [2.0]], "model": "rf"}', [1.0, 2.0])[0]
    assert check(b'{"outputs": [{"name": "y", "shape": [2], "data": [1.00001, 2.0]}]}', [1.0, 2.0])[0]
    assert not check(b'{"predictions": [1.01, 2.0]}', [1.0, 2.0])[0]  # 1 % off: far beyond float32 rounding
    assert not check(b'{"prediction": 0.0}', [1.0])[0]
    assert not check(b"Internal Server Error", [1.0])[0]


@pytest.mark.slow
def test_a_short_run_of_the_floor_and_tabserve_rows_verifies_loads_and_reports(tmp_path):
    missing = [tool for tool in ("wrk", "luajit", "taskset") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (bash benchmarks/peers/setup.sh installs them)")
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, wrk_cpu = str(cpus[0]), str(cpus[-1])
    env = {**os.environ, "PEERS": str(tmp_path), "TABSERVE_VENV": str(BIN.parent), "TABSERVE_SRC": str(REPO)}

    # The benchmark's model with 5 trees instead of 100, imported the way benchmarks/peers/tabserve/setup.sh does.
    subprocess.run([sys.executable, PEERS / "make_model.py", "--out", tmp_path / "model", "--trees", "5",
                    "--samples", "2000"], check=True, capture_output=True, timeout=120)
    rows = (tmp_path / "model" / "rows1000.csv").read_text()
    (tmp_path / "sample.csv").write_text("f0,f1,f2,f3,f4,f5,f6,f7\n" + rows)
    subprocess.run([BIN / "tabserve", "import", tmp_path / "model" / "model.joblib", "--trust-pickle", "--sample",
                    tmp_path / "sample.csv", "--name", "rf", "--out", tmp_path / "tabserve" / "bundle"],
                   check=True, capture_output=True, timeout=120)

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, PEERS / "run.py", "--rounds", "1", "--duration", "1", "--warmup", "0",
                          "--server-cpu", server_cpu, "--wrk-cpu", wrk_cpu, "--python", sys.executable,
                          "--out", out, *ROWS], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    results = {r["row"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for name in ROWS:
        r = results[name]
        assert r["ok"], (name, r.get("error"))
        assert r["non2xx"] == 0 and r["sock_err"] == 0, r
        assert r["c1"]["requests"] > 0 and r["c32"]["requests"] > 0 and r["batch"]["requests"] > 0
        assert "leftover_pids" not in r  # every server process was stopped
    # tabserve's answers equal scikit-learn's predictions, for 1 and for 1000 rows
    assert results["tabserve"]["verify1"].startswith("ok") and results["tabserve"]["verify1000"].startswith("ok")
    assert results["inproc"]["float_1thread"]["rows1000_us"] > 0

    table = (out / "table.md").read_text()
    assert table == run.stdout[run.stdout.index("# tabserve peers benchmark"):][: len(table)]
    for name in ROWS:
        line = next(x for x in table.splitlines() if x.startswith(f"| {name} "))
        assert line.endswith("| 1/1 |"), line
    assert "- **tabserve**: c1 vs asgi-floor" in table and "batch vs in-process ort (1 thread)" in table
