"""`tabserve retrain` as cron runs it: the summary, exit 0 promoted or not, exit 3 when it cannot run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tabserve.cli import main
from tabserve.registry import open_source
from tests.registry.stores import fresh_home
from tests.servers import running_server
from tests.training.test_retrain import diabetes_files

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


def test_help_explains_the_decision_metrics_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        cli("retrain", "--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--data", "--alias", "--metric", "--min-improvement", "--eval-data", "--home",
                 "rmse (lower)", "log_loss (lower)", "roc_auc", "3 when it could not run", "cron"):
        assert word in text


def test_retrain_promotes_then_keeps_and_says_so(registry_home, tmp_path, capsys):
    small, full = diabetes_files(tmp_path)
    assert cli("train", small, "--target", "target", "--estimator", "linear", "--register", "diabetes",
               "--alias", "champion") == 0
    capsys.readouterr()

    assert cli("retrain", "diabetes", "--data", full) == 0
    captured = capsys.readouterr()
    assert "champion: diabetes version 1 (champion), regression, linear on 10 features" in captured.err
    out = captured.out
    assert "challenger version 2 vs champion version 1 (champion)" in out
    assert "evaluated on 89 rows: holdout of full.csv" in out
    assert "r2*" in out and "(higher is better)" in out and "(lower is better)" in out
    assert "decision: PROMOTED: r2 improved by +" in out and "diabetes@champion -> version 2 (was 1)" in out

    assert cli("retrain", "diabetes", "--data", full, "--min-improvement", "0.5") == 0
    out = capsys.readouterr().out
    assert ("decision: KEPT version 2: r2 changed by +0 (promotion needs > 0 and >= 0.5); version 3 is registered "
            "without the alias") in out
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "2"

    assert cli("registry", "list", "diabetes") == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["3"].endswith("kept 2 (r2 +0)")
    assert re.search(r"promoted over 1 \(r2 \+\d[.\d]*\)$", rows["2"]) and "champion" in rows["2"]
    assert rows["1"].endswith("-")


def test_exit_3_when_it_cannot_run(registry_home, tmp_path, capsys):
    _, full = diabetes_files(tmp_path)
    assert cli("retrain", "nope", "--data", full) == 3
    assert "tabserve retrain: error: there is no model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        cli("retrain", "nope", "--data", full, "--min-improvement", "-1")
    assert done.value.code == 2  # a usage error, as for every command


@pytest.mark.slow
def test_a_running_server_picks_the_promotion_up_without_a_restart(registry_home, tmp_path, capsys):
    small, full = diabetes_files(tmp_path)
    assert cli("train", small, "--target", "target", "--estimator", "linear", "--name", "diabetes",
               "--register", "diabetes", "--alias", "champion") == 0
    row = {"data": [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]}
    env = {"TABSERVE_HOME": str(registry_home)}
    with running_server("models:/diabetes@champion", "--poll-interval-s", "0.2", "--no-access-log",
                        env=env) as base:
        before = httpx.post(f"{base}/api/v1/predict", json=row).json()
        assert cli("retrain", "diabetes", "--data", full) == 0
        assert "decision: PROMOTED" in capsys.readouterr().out
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/api/v1/models/diabetes").json()["version"] != "2":
            assert time.monotonic() < deadline, "the server did not swap the promoted version in"
            time.sleep(0.1)
        after = httpx.post(f"{base}/api/v1/predict", json=row).json()
    assert before["model_version"] == "1" and after["model_version"] == "2"
    assert after["prediction"] != before["prediction"]
