"""Retraining: the champion's recipe on new data, both scored on the same rows, promotion only when better, and
the decision recorded in MLflow either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from tabserve.core.bundle import read_bundle
from tabserve.errors import ModelNotFound, TabserveError
from tabserve.registry import open_source
from tabserve.registry.mlflow import client, tracking_uri
from tabserve.training import train_file
from tabserve.training.publish import register_bundle
from tabserve.training.retrain import fingerprint, retrain, score, training_recipe
from tests.registry.stores import fresh_home

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


def diabetes_files(folder: Path) -> tuple[Path, Path]:
    """small.csv: 40 rows whose target carries heavy noise (a poor champion); full.csv: all 442 clean rows."""
    frame = load_diabetes(as_frame=True).frame
    small = frame.sample(40, random_state=3).copy()
    small["target"] += np.random.default_rng(3).normal(scale=150, size=len(small))
    small.to_csv(folder / "small.csv", index=False)
    frame.to_csv(folder / "full.csv", index=False)
    return folder / "small.csv", folder / "full.csv"


@pytest.fixture
def champion(registry_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Model 'diabetes' version 1 (linear, trained on the noisy rows) aliased champion; returns the data files."""
    small, full = diabetes_files(tmp_path)
    bundle = train_file(small, "target", estimator="linear", name="diabetes", home=registry_home).path
    register_bundle(bundle, "diabetes", alias="champion", home=registry_home)
    return small, full


def decision(home: Path, version: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """The challenger version's tags, its run's tags and its run's metrics."""
    mlflow = client(tracking_uri(home))
    found = mlflow.get_model_version("diabetes", version)
    run = mlflow.get_run(found.run_id)
    return found.tags, run.data.tags, run.data.metrics


def test_a_better_challenger_is_registered_promoted_and_the_decision_recorded(champion, registry_home):
    _, full = champion
    result = retrain("diabetes", full, home=registry_home)
    assert result.promoted and result.metric == "r2" and result.higher_is_better
    assert result.champion.version == "1" and result.challenger.version == "2"
    assert result.challenger_scores["r2"] > result.champion_scores["r2"] + 0.1
    assert result.improvement == pytest.approx(result.challenger_scores["r2"] - result.champion_scores["r2"])
    assert result.evaluation.rows == 89  # the challenger's holdout: 20% of 442 rows
    assert "holdout of full.csv" in result.evaluation.source
    # a server following models:/diabetes@champion now resolves to the challenger
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "2"

    version_tags, run_tags, metrics = decision(registry_home, "2")
    for tags in (version_tags, run_tags):
        assert tags["tabserve.retrain.decision"] == "promoted"
        assert tags["tabserve.retrain.metric"] == "r2"
        assert tags["tabserve.retrain.champion_version"] == "1"
        assert tags["tabserve.retrain.eval_fingerprint"] == result.evaluation.fingerprint
    assert metrics["eval.champion.r2"] == pytest.approx(result.champion_scores["r2"])
    assert metrics["eval.challenger.r2"] == pytest.approx(result.challenger_scores["r2"])
    assert metrics["eval.challenger.rmse"] == pytest.approx(result.challenger_scores["rmse"])
    assert metrics["eval.rows"] == 89


def test_a_challenger_short_of_the_margin_is_registered_without_the_alias(champion, registry_home):
    _, full = champion
    result = retrain("diabetes", full, metric="rmse", min_improvement=1e6, home=registry_home)
    assert not result.promoted and not result.higher_is_better
    assert result.improvement == pytest.approx(result.champion_scores["rmse"] - result.challenger_scores["rmse"])
    assert result.improvement > 0  # better, but not by a million
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "1"
    assert open_source("models:/diabetes", home=registry_home).resolve().version == "2"
    version_tags, run_tags, metrics = decision(registry_home, "2")
    assert version_tags["tabserve.retrain.decision"] == run_tags["tabserve.retrain.decision"] == "kept_champion"
    assert "needs > 0 and >= 1e+06" in version_tags["tabserve.retrain.reason"]
    assert metrics["eval.champion.rmse"] > metrics["eval.challenger.rmse"]


def test_a_challenger_that_is_no_better_is_not_promoted(champion, registry_home):
    small, _ = champion
    # the same recipe on the same rows gives the same model: improvement 0, which is not an improvement
    result = retrain("diabetes", small, eval_data=small, home=registry_home)
    assert result.evaluation.rows == 40 and result.evaluation.source == "small.csv (every row)"
    assert result.improvement == 0 and not result.promoted
    assert result.challenger_scores == result.champion_scores
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "1"


def test_the_recipe_is_the_champions_training(champion, registry_home):
    source = open_source("models:/diabetes@champion", home=registry_home)
    manifest = read_bundle(source.fetch(source.resolve())).manifest
    recipe = training_recipe(manifest, "diabetes", "1")
    assert recipe["estimator"] == "linear" and recipe["target"] == "target" and recipe["task"] == "regression"
    assert recipe["features"] == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert (recipe["seed"], recipe["test_size"]) == (42, 0.2)
    _, full = champion
    challenger = retrain("diabetes", full, home=registry_home)
    fetched = open_source(f"models:/diabetes/{challenger.challenger.version}", home=registry_home)
    retrained = read_bundle(fetched.fetch(fetched.resolve())).manifest
    assert retrained.training["estimator"] == "linear" and retrained.feature_names == manifest.feature_names
    assert retrained.version == "2"  # the manifest's version follows the registry's


def test_an_imported_champion_has_no_recipe(registry_home, tmp_path):
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "d.csv", index=False)
    bundle = train_file(tmp_path / "d.csv", "target", estimator="linear", home=registry_home).path
    manifest = read_bundle(bundle).manifest
    imported = manifest.model_copy(update={"training": {"model": "LGBMRegressor", "imported_from": "m.txt"}})
    with pytest.raises(TabserveError, match=r"not trained by `tabserve train` \(it was imported from m\.txt\)"):
        training_recipe(imported, "d", "1")


def test_errors_that_stop_a_retrain(champion, registry_home):
    _, full = champion
    with pytest.raises(ModelNotFound, match="no alias 'production'"):
        retrain("diabetes", full, alias="production", home=registry_home)
    with pytest.raises(ModelNotFound, match="there is no model 'other'"):
        retrain("other", full, home=registry_home)
    with pytest.raises(TabserveError, match="metric 'accuracy' does not apply to a regression model; choose one of "
                                            "r2, rmse, mae"):
        retrain("diabetes", full, metric="accuracy", home=registry_home)
    assert open_source("models:/diabetes", home=registry_home).resolve().version == "1"  # nothing registered


def test_classification_scores_follow_the_models_class_order():
    y = np.array(["b", "a", "b", "c"])
    proba = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    found = score("classification", y, np.array(["b", "a", "b", "c"]), proba, ["a", "b", "c"])
    assert found["accuracy"] == 1.0 and found["roc_auc"] == 1.0
    assert found["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.6, 0.8])))
    # classes 10, 9 as the model orders them (not alphabetically): column 0 is class 10
    found = score("classification", np.array([10, 9]), np.array([10, 9]), np.array([[0.9, 0.1], [0.2, 0.8]]),
                  [10, 9])
    assert found["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8])))
    with pytest.raises(TabserveError, match="class\\(es\\) 'd' that the model does not know"):
        score("classification", np.array(["d"]), np.array(["a"]), np.array([[1.0, 0, 0]]), ["a", "b", "c"])


def test_the_fingerprint_changes_with_the_rows():
    X = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    y = np.array([0.5, 1.5])
    assert fingerprint(X, y) == fingerprint(X.copy(), y.copy())
    assert fingerprint(X, y) != fingerprint(X, y[::-1].copy())
    assert fingerprint(X, y) != fingerprint(X.iloc[::-1].reset_index(drop=True), y)


def test_a_binary_classifier_is_compared_on_every_classification_metric(registry_home, tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.sample(40, random_state=0).to_csv(tmp_path / "small.csv", index=False)
    frame.to_csv(tmp_path / "full.csv", index=False)
    bundle = train_file(tmp_path / "small.csv", "target", estimator="linear", name="cancer", home=registry_home)
    register_bundle(bundle.path, "cancer", alias="champion", home=registry_home)
    result = retrain("cancer", tmp_path / "full.csv", metric="log_loss", home=registry_home)
    every = {"accuracy", "f1", "log_loss", "roc_auc"}
    assert set(result.champion_scores) == set(result.challenger_scores) == every
    assert result.evaluation.rows == 114  # ceil(0.2 * 569)
    assert not result.higher_is_better
    scores = result.champion_scores["log_loss"], result.challenger_scores["log_loss"]
    assert result.improvement == pytest.approx(scores[0] - scores[1])
    assert result.promoted == (result.improvement > 0)
    champion = open_source("models:/cancer@champion", home=registry_home).resolve().version
    assert champion == ("2" if result.promoted else "1")
