"""Retraining from traffic: the payload log's rows joined with their feedback train the challenger, the log's
window is recorded in MLflow, and the same gate decides."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_diabetes

import tabserve
from tabserve.cli import main
from tabserve.errors import TabserveError
from tabserve.loop.feedback import append_feedback, parse_feedback
from tabserve.loop.payload import ParquetPayloadLog
from tabserve.loop.store import LocalStore
from tabserve.registry import open_source
from tabserve.registry.mlflow import client, tracking_uri
from tabserve.training import train_file
from tabserve.training.publish import register_bundle
from tabserve.training.retrain import retrain
from tests.registry.stores import fresh_home

from .conftest import record

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


@pytest.fixture
def served(registry_home: Path, tmp_path: Path) -> tabserve.Model:
    """diabetes version 1 (linear, 40 rows of heavy label noise) as champion, loaded as a server serves it."""
    frame = load_diabetes(as_frame=True).frame
    small = frame.sample(40, random_state=3).copy()
    small["target"] += np.random.default_rng(3).normal(scale=150, size=len(small))
    small.to_csv(tmp_path / "small.csv", index=False)
    bundle = train_file(tmp_path / "small.csv", "target", estimator="linear", name="diabetes",
                        home=registry_home).path
    register_bundle(bundle, "diabetes", alias="champion", home=registry_home)
    source = open_source("models:/diabetes@champion", home=registry_home)
    model = tabserve.load(source.fetch(source.resolve()))
    model.served_name, model.served_version = "diabetes", "1"
    return model


def traffic(log_dir: Path, model: tabserve.Model, when: float | None = None, label: bool = True) -> None:
    """Every diabetes row predicted in 4-row requests, and (with ``label``) the true targets as feedback."""
    frame = load_diabetes(as_frame=True).frame
    X, y = frame[model.manifest.feature_names].to_numpy(), frame["target"].to_numpy()
    store = LocalStore(log_dir)
    log = ParquetPayloadLog(store)
    items = []
    for start in range(0, len(X), 4):
        rid = f"t{when or 0}-{start}"
        log.offer(*record(model, X[start:start + 4].tolist(), rid, when=when))
        items += [{"request_id": rid, "row": j, "label": float(y[start + j])} for j in range(len(X[start:start + 4]))]
    log.close()
    if label:
        append_feedback(store, model, parse_feedback({"feedback": items}, model, 10_000))


def test_traffic_with_feedback_trains_a_promoted_challenger(served: tabserve.Model, registry_home: Path,
                                                            tmp_path: Path) -> None:
    log_dir = tmp_path / "payload"
    traffic(log_dir, served, when=time.time() - 10 * 86400)  # old traffic, left out by --since
    traffic(log_dir, served)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    result = retrain("diabetes", None, from_log=log_dir, since=since, home=registry_home)
    assert result.promoted and result.challenger.version == "2"
    assert result.evaluation.rows == 89  # the holdout of the 442 logged rows since `since`, not 884
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "2"
    mlflow = client(tracking_uri(registry_home))
    run = mlflow.get_run(mlflow.get_model_version("diabetes", "2").run_id)
    tags = run.data.tags
    assert tags["tabserve.retrain.log_rows"] == "442" and tags["tabserve.retrain.log_versions"] == "1"
    assert tags["tabserve.retrain.log_since"] == since.isoformat()
    assert dt.datetime.fromisoformat(tags["tabserve.retrain.log_first"]) >= since
    [dataset] = run.inputs.dataset_inputs
    assert str(log_dir) in dataset.dataset.source and "payload log" in dataset.dataset.source


def test_the_cli_adds_the_original_data_and_reports_no_labels(served: tabserve.Model, registry_home: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log_dir = tmp_path / "payload"
    traffic(log_dir, served, label=False)
    assert main(["retrain", "diabetes", "--from-log", str(log_dir), "--home", str(registry_home)]) == 3
    assert "no labelled predictions of diabetes in the payload log" in capsys.readouterr().err
    load_diabetes(as_frame=True).frame.to_csv(tmp_path / "full.csv", index=False)
    assert main(["retrain", "diabetes", "--from-log", str(log_dir), "--data", str(tmp_path / "full.csv"),
                 "--home", str(registry_home)]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert main(["retrain", "diabetes", "--home", str(registry_home)]) == 3
    assert "--from-log DIR" in capsys.readouterr().err


def test_a_log_without_the_model_is_refused(served: tabserve.Model, registry_home: Path, tmp_path: Path) -> None:
    (tmp_path / "payload" / "other").mkdir(parents=True)
    with pytest.raises(TabserveError, match="holds no folder 'diabetes'.*other"):
        retrain("diabetes", None, from_log=tmp_path / "payload", home=registry_home)


def test_monitor_retrains_once_when_quality_drops(served: tabserve.Model, registry_home: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import json

    log_dir = tmp_path / "payload"
    traffic(log_dir, served)
    base = ["monitor", "diabetes", "--from-log", str(log_dir), "--home", str(registry_home)]
    assert main([*base, "--metric", "mae", "--above", "1e6"]) == 0  # healthy: nothing done
    assert json.loads(capsys.readouterr().out)["action"] == "none"
    assert main([*base, "--metric", "mae", "--below", "30"]) == 3  # an error metric has no --below
    assert "use --above" in capsys.readouterr().err
    assert main([*base, "--metric", "mae", "--above", "30"]) == 1  # crossed, no --retrain: exit 1 for cron
    out = json.loads(capsys.readouterr().out)
    assert out["labelled"] == 442 and out["value"] > 30 and out["crossed"][0].startswith("mae ")
    assert main([*base, "--metric", "mae", "--above", "30", "--retrain"]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "2"
    # version 2 has no labelled traffic yet: not judged, whatever the threshold
    assert main([*base, "--metric", "mae", "--above", "30", "--retrain"]) == 0
    assert "fewer than --min-labelled" in json.loads(capsys.readouterr().out)["notes"][0]


def test_monitor_sees_input_drift(served: tabserve.Model, registry_home: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    import json

    import pandas as pd

    training = pd.read_csv(tmp_path / "small.csv")[served.manifest.feature_names].to_numpy()
    X = np.tile(training, (6, 1))  # the champion's own rows, 240 of them: bmi as in training
    log = ParquetPayloadLog(LocalStore(tmp_path / "payload"))
    for start in range(0, len(X), 40):
        log.offer(*record(served, X[start:start + 40].tolist(), f"a{start}"))
    log.close()
    base = ["monitor", "diabetes", "--from-log", str(tmp_path / "payload"), "--home", str(registry_home),
            "--psi-above", "0.25"]
    main(base)  # (32 training rows make coarse quantiles: other features may cross, bmi does not)
    out = json.loads(capsys.readouterr().out)
    assert out["psi"]["bmi"] < 0.25 and not any("bmi" in reason for reason in out["crossed"])
    X[:, 2] += 0.1  # bmi shifted by about two standard deviations
    log = ParquetPayloadLog(LocalStore(tmp_path / "payload"))
    for start in range(0, len(X), 40):
        log.offer(*record(served, X[start:start + 40].tolist(), f"b{start}"))
    log.close()
    assert main(base) == 1
    out = json.loads(capsys.readouterr().out)
    assert "bmi PSI" in out["crossed"][0] and out["psi"]["bmi"] > 0.25
