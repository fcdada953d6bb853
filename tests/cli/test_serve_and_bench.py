"""The real command line: a uvicorn process on 127.0.0.1 (``tests.servers``), driven like a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tabserve.cli import main
from tests.servers import running_server, tabserve_cmd

ORIGINAL = {"data": [0.1, 0.2, 0.3, 0.4, 0.5]}


def _wait_until_every_worker_is_ready(base: str, in_a_row: int = 20, timeout_s: float = 60.0) -> None:
    """running_server returns when one worker answers /readyz; a sibling still loading rightly answers 503
    (seen in CI under load). Wait until the kernel's spread of connections has met only ready workers."""
    deadline, seen = time.monotonic() + timeout_s, 0
    while seen < in_a_row:
        assert time.monotonic() < deadline, "the workers did not all become ready"
        ok = httpx.get(f"{base}/readyz", headers={"connection": "close"}).status_code == 200
        seen = seen + 1 if ok else 0
        if not ok:
            time.sleep(0.2)


@pytest.mark.slow
def test_serve_with_no_model_trains_the_demo_first_then_answers_the_original_curl(tmp_path):
    home = tmp_path / "home"
    with running_server(env={"TABSERVE_HOME": str(home)}) as base:
        r = httpx.post(f"{base}/api/v1/predict", json=ORIGINAL)
        assert r.status_code == 200
        body = r.json()
        assert {"prediction", "latency_ms", "total_time_ms", "model_format", "features_count"} <= set(body)
        assert body["features_count"] == 5 and body["model_format"] == "onnx"
        assert httpx.get(f"{base}/api/v1/predict/health").json()["model_loaded"] is True
    assert running_server.last_exit_code == 0  # clean stop on SIGTERM
    assert (home / "models" / "demo" / "1" / "tabserve.json").is_file()
    assert "training the demo model first" in running_server.last_output
    log_lines = [json.loads(x) for x in running_server.last_output.splitlines() if '"event":"request"' in x]
    assert any(line["route"] == "/api/v1/predict" and line["status"] == 200 for line in log_lines)


@pytest.mark.slow
def test_serve_a_bundle_with_two_workers_and_bench_over_http(demo_bundle, capsys):
    with running_server(str(demo_bundle), "--workers", "2") as base:
        _wait_until_every_worker_is_ready(base)
        for _ in range(4):
            assert httpx.post(f"{base}/api/v1/predict", json=ORIGINAL).status_code == 200
        assert main(["bench", "--url", base, "-n", "20", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
    assert running_server.last_exit_code == 0
    assert result["mode"] == "http" and result["requests"] == 20
    assert 0 < result["min_ms"] <= result["avg_ms"] <= result["max_ms"]
    assert result["init_ms"] > 0


def test_serve_refuses_a_missing_bundle_with_a_clear_message(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_without_pretrain_refuses_an_empty_home(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TABSERVE_HOME", str(tmp_path))
    assert main(["serve", "--no-pretrain"]) == 2
    assert "no bundle at" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_bench_in_process_reports_init_and_latency(demo_bundle, capsys):
    assert main(["bench", str(demo_bundle)]) == 0
    out = capsys.readouterr().out
    assert "model init time:" in out
    assert "latency over 100 predictions of 1 row(s): min" in out and "p99" in out and "max" in out
    assert main(["bench", str(demo_bundle), "-n", "5", "--rows", "50", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 50 and result["requests"] == 5 and result["init_ms"] > 0


def test_help_texts_describe_every_command():
    out = subprocess.run(tabserve_cmd("--help"), capture_output=True, text=True, check=True).stdout
    for command in ("train", "serve", "bench"):
        assert command in out
    serve_help = subprocess.run(tabserve_cmd("serve", "--help"), capture_output=True, text=True, check=True).stdout
    assert "--workers" in serve_help and "TABSERVE_" in serve_help
    assert Path(sys.executable).parent.joinpath("tabserve").exists()  # the console script is installed


@pytest.mark.slow
def test_bench_over_http_with_concurrency_reports_throughput(demo_bundle, capsys):
    with running_server(str(demo_bundle)) as base:
        assert main(["bench", "--url", base, "-c", "4", "--duration", "1", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(["bench", "--url", base, "-c", "2", "--duration", "0.5", "--rows", "10"]) == 0
        text = capsys.readouterr().out
    assert result["concurrency"] == 4 and result["statuses"] == {"200": result["requests"]}
    assert result["req_per_s"] > 0 and result["p50_ms"] <= result["p99_ms"]
    assert "requests/s (" in text and "2 connections, 10 row(s) per request" in text


def test_bench_draws_categorical_features_from_their_categories(tmp_path, capsys):
    """A model with a text feature: bench's rows take its training categories, in process and over HTTP."""
    import numpy as np
    import pandas as pd

    from tabserve.training import train_file

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"area": rng.uniform(20, 120, 300), "city": rng.choice(["lyon", "nice", "paris"], 300)})
    frame["rent"] = frame.area * 20 + frame.city.map({"lyon": 100, "nice": 300, "paris": 900})
    frame.to_csv(tmp_path / "rents.csv", index=False)
    bundle = train_file(tmp_path / "rents.csv", "rent", estimator="linear", dest=tmp_path / "b").path
    assert main(["bench", str(bundle), "-n", "5", "--rows", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 20
    with running_server(str(bundle)) as base:
        assert main(["bench", "--url", base, "-n", "5", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["requests"] == 5
