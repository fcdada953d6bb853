"""``models:/`` URIs wherever a bundle path goes (`tabserve predict --model`, `bench`, `report`,
`tabserve.load`), `tabserve registry alias --delete`, and the training dataset `train --register` logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

import tabserve
from tabserve.cli import main
from tabserve.errors import ModelNotFound
from tabserve.registry import open_source
from tabserve.registry.mlflow import client, tracking_uri
from tests.registry.stores import fresh_home

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                  demo_bundle: Path, iris_bundle: Path) -> Path:
    """houses: version 1 (the demo regressor) is champion, version 2 (iris) is challenger."""
    from tabserve.training.publish import register_bundle

    home = fresh_home(tmp_path, monkeypatch, tmp_path_factory)
    register_bundle(demo_bundle, "houses", alias="champion", home=home)
    register_bundle(iris_bundle, "houses", alias="challenger", home=home)
    return home


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


def demo_rows(demo_bundle: Path, path: Path, n: int = 25) -> Path:
    names = tabserve.read_bundle(demo_bundle).manifest.feature_names
    x = np.random.default_rng(3).normal(size=(n, len(names))).round(4)
    pd.DataFrame(x, columns=names).to_csv(path, index=False)
    return path


def test_load_takes_a_registry_uri(registry_home, demo_bundle, iris_bundle):
    x = pd.read_csv(demo_rows(demo_bundle, registry_home / "x.csv"))
    model = tabserve.load("models:/houses@champion")
    assert model.bundle.path == registry_home / "cache" / "mlflow" / "houses" / "1"
    np.testing.assert_array_equal(model.predict(x), tabserve.load(demo_bundle).predict(x))
    assert tabserve.load("models:/houses/2").manifest.model.sha256 == \
        tabserve.read_bundle(iris_bundle).manifest.model.sha256
    with pytest.raises(ModelNotFound, match="has no alias 'nope'"):
        tabserve.load("models:/houses@nope")


def test_predict_scores_with_a_registry_version(registry_home, demo_bundle, tmp_path, capsys):
    rows = demo_rows(demo_bundle, tmp_path / "in.csv")
    assert cli("predict", rows, "-o", tmp_path / "out.csv", "--model", "models:/houses@champion",
               "--no-progress") == 0
    assert "cache/mlflow/houses/1" in capsys.readouterr().err
    got = pd.read_csv(tmp_path / "out.csv", float_precision="round_trip")["prediction"].to_numpy()
    np.testing.assert_array_equal(got, tabserve.load(demo_bundle).predict(pd.read_csv(rows)))
    assert cli("predict", rows, "-o", tmp_path / "out2.csv", "--model", "models:/houses/7") == 2
    assert "model 'houses' has no version 7" in capsys.readouterr().err


def test_bench_and_report_take_a_registry_version(registry_home, capsys, tmp_path):
    assert cli("bench", "models:/houses@champion", "-n", "5", "--warmup", "1", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["path"] == str(registry_home / "cache" / "mlflow" / "houses" / "1") and result["requests"] == 5

    pytest.importorskip("matplotlib")
    out = tmp_path / "challenger.html"
    assert cli("report", "models:/houses@challenger", "-o", out) == 0
    assert "iris" in capsys.readouterr().out and "setosa" in out.read_text(encoding="utf-8")


def test_alias_delete_removes_only_the_alias(registry_home, capsys):
    assert cli("registry", "alias", "houses", "challenger", "--delete") == 0
    assert capsys.readouterr().out.strip() == ("houses@challenger deleted (was version 2; the version stays "
                                               "registered)")
    with pytest.raises(ModelNotFound, match="has no alias 'challenger'"):
        open_source("models:/houses@challenger", home=registry_home).resolve()
    assert open_source("models:/houses/2", home=registry_home).resolve().version == "2"
    assert open_source("models:/houses@champion", home=registry_home).resolve().version == "1"

    assert cli("registry", "alias", "houses", "challenger", "--delete") == 2
    assert "has no alias 'challenger' to delete (its aliases: champion -> 1)" in capsys.readouterr().err
    assert cli("registry", "alias", "nope", "champion", "--delete") == 2
    assert "there is no model 'nope'" in capsys.readouterr().err
    assert cli("registry", "alias", "houses", "champion", "1", "--delete") == 2
    assert "--delete takes no VERSION" in capsys.readouterr().err
    assert cli("registry", "alias", "houses", "challenger") == 2
    assert "give VERSION" in capsys.readouterr().err


def test_train_and_retrain_log_the_training_file_as_the_runs_dataset_and_the_time(registry_home, tmp_path):
    from tabserve.training.retrain import retrain

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    assert cli("train", csv, "--target", "target", "--estimator", "linear", "--register", "diabetes",
               "--alias", "champion") == 0
    newer = tmp_path / "june.csv"
    load_diabetes(as_frame=True).frame.iloc[:300].to_csv(newer, index=False)
    retrain("diabetes", newer, home=registry_home)
    mlflow = client(tracking_uri(registry_home))
    for version, file, rows in (("1", csv, 442), ("2", newer, 300)):
        run = mlflow.get_run(mlflow.get_model_version("diabetes", version).run_id)
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == file.name and str(file.resolve()) in used.dataset.source
        assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
        assert json.loads(used.dataset.profile)["num_rows"] == rows
        assert run.data.metrics["training_seconds"] > 0
