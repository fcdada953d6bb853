"""`tabserve train --estimator lightgbm | xgboost | auto` and `--param KEY=VALUE`, as a user runs them on
diabetes (regression) and breast_cancer (binary): the bundle answers as the fitted model (within 1e-9
relative, identical labels), the hyper-parameters given are the ones fitted, a typo is refused with the
close names, and auto records the scores it compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import tabserve
from tabserve.training import train_file
from tabserve.training.estimators import final_estimator

pytest.importorskip("lightgbm")
pytest.importorskip("xgboost")

REL = 1e-9


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("boosting")
    cancer = load_breast_cancer(as_frame=True).frame
    paths = {"diabetes": folder / "diabetes.csv", "cancer": folder / "cancer.csv"}
    load_diabetes(as_frame=True).frame.to_csv(paths["diabetes"], index=False)
    cancer[[*cancer.columns[:10], "target"]].to_csv(paths["cancer"], index=False)
    return paths


def onnx_outputs(bundle: Path, rows: pd.DataFrame) -> list[np.ndarray]:
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) == 1:
        return session.run(None, {names[0]: rows.to_numpy(dtype=np.float64)})
    return session.run(None, {n: rows[[n]].to_numpy(dtype=np.float64) for n in names})


@pytest.mark.parametrize("estimator", ["lightgbm", "xgboost"])
def test_boosting_regressor_through_the_cli(cli, capsys, tables, tmp_path, estimator):
    out_dir = tmp_path / estimator
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", estimator,
               "--param", "n_estimators=7", "--param", "learning_rate=0.3", "--out", out_dir) == 0
    out = capsys.readouterr().out
    assert f"(regression, {estimator})" in out and "parity:   passed" in out
    manifest = json.loads((out_dir / "tabserve.json").read_text())
    training = manifest["training"]
    assert training["params"]["n_estimators"] == 7 and training["params"]["learning_rate"] == 0.3
    assert training["params_set"] == {"n_estimators": 7, "learning_rate": 0.3}
    assert manifest["parity"]["max_rel_diff"] <= REL

    # 7 trees were fitted, and the bundle answers as the refitted model on every row
    result = train_file(tables["diabetes"], "target", estimator=estimator, dest=tmp_path / "again",
                        params={"n_estimators": 7, "learning_rate": 0.3})
    model = final_estimator(result.pipeline)
    trees = model.booster_.num_trees() if estimator == "lightgbm" else len(model.get_booster().get_dump())
    assert trees == 7
    X = pd.read_csv(tables["diabetes"]).drop(columns="target")
    expected = result.pipeline.predict(X.to_numpy(dtype=np.float64))
    got = onnx_outputs(out_dir, X)[0].ravel()
    assert np.all(np.abs(got - expected) <= REL * np.abs(expected) + 1e-12)


@pytest.mark.parametrize("estimator", ["lightgbm", "xgboost"])
def test_boosting_classifier_same_labels_and_probabilities(tables, tmp_path, estimator):
    result = train_file(tables["cancer"], "target", estimator=estimator, dest=tmp_path / "b",
                        params={"n_estimators": 20})
    assert result.manifest.training["estimator"] == estimator
    assert result.manifest.parity.passed and result.manifest.parity.max_rel_diff <= REL
    X = pd.read_csv(tables["cancer"]).drop(columns="target")
    outputs = onnx_outputs(result.path, X)
    labels = result.pipeline.predict(X.to_numpy(dtype=np.float64))
    proba = result.pipeline.predict_proba(X.to_numpy(dtype=np.float64))
    assert np.array_equal(outputs[0].ravel(), labels)
    assert np.all(np.abs(outputs[1] - proba) <= REL * np.abs(proba) + 1e-12)


def test_a_misspelt_param_is_refused_with_the_close_name(cli, capsys, tables, tmp_path):
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", "xgboost",
               "--param", "n_estimatrs=7", "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "--param: xgboost (XGBRegressor) has no parameter 'n_estimatrs' (did you mean 'n_estimators'?)" in err
    assert not (tmp_path / "x").exists()


def test_param_values_are_read_as_json_else_text_and_checked(cli, capsys, tables, tmp_path):
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", "random_forest",
               "--param", "max_depth=-3", "--out", tmp_path / "x") == 2
    assert "--param for random_forest: The 'max_depth' parameter of RandomForestRegressor" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("train", tables["diabetes"], "--target", "target", "--param", "n_estimators")
    assert "'n_estimators': write KEY=VALUE" in capsys.readouterr().err
    assert cli("train", tables["cancer"], "--target", "target", "--estimator", "linear",
               "--param", "class_weight=balanced", "--param", "C=0.5", "--out", tmp_path / "ok") == 0
    params = json.loads((tmp_path / "ok" / "tabserve.json").read_text())["training"]["params"]
    assert params["class_weight"] == "balanced" and params["C"] == 0.5


def test_auto_picks_the_best_cross_validated_family_and_records_the_scores(cli, capsys, tables, tmp_path):
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", "auto",
               "--out", tmp_path / "auto") == 0
    err = capsys.readouterr().err
    training = json.loads((tmp_path / "auto" / "tabserve.json").read_text())["training"]
    scores = training["auto"]
    assert list(scores) == ["linear", "random_forest", "gradient_boosting", "lightgbm", "xgboost"]
    assert training["estimator"] == max(scores, key=scores.get)
    assert training["auto_metric"].startswith("r2, mean of 5-fold cross-validation on the training rows")
    for family, score in scores.items():
        assert f"auto: {family} r2={score:.4f} (5-fold cross-validation" in err
    assert f"auto: chose {training['estimator']} (r2={scores[training['estimator']]:.4f}" in err


def test_auto_on_a_classification_scores_accuracy(tables, tmp_path):
    result = train_file(tables["cancer"], "target", estimator="auto", dest=tmp_path / "c")
    training = result.manifest.training
    assert training["auto_metric"].startswith("accuracy, mean of 5-fold")
    assert all(0.8 < s <= 1 for s in training["auto"].values())
    assert training["estimator"] == max(training["auto"], key=training["auto"].get)
    assert result.manifest.parity.passed


def test_auto_takes_no_params(cli, capsys, tables, tmp_path):
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", "auto",
               "--param", "n_estimators=7", "--out", tmp_path / "x") == 2
    assert "choose the --estimator whose parameters you set" in capsys.readouterr().err


@pytest.mark.parametrize("estimator", ["lightgbm", "xgboost"])
def test_text_one_hot_and_missing_numbers_routed_by_the_trees(tables, tmp_path, estimator):
    frame = pd.read_csv(tables["diabetes"])
    frame["sex"] = np.where(frame["sex"] > 0, "M", "F")
    frame.loc[::9, "bmi"] = np.nan
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    result = train_file(tmp_path / "mixed.csv", "target", estimator=estimator, dest=tmp_path / "b",
                        params={"n_estimators": 15})
    steps = [type(s).__name__ for _, s in result.pipeline.steps]
    assert steps[0] == "ColumnTransformer" and "missing" not in result.manifest.training  # no imputer
    assert result.manifest.parity.passed and result.manifest.parity.max_rel_diff <= REL
    assert next(f for f in result.manifest.features if f.name == "bmi").allow_missing


def test_wine_multiclass_with_both_libraries(tmp_path):
    frame = load_wine(as_frame=True).frame
    frame.to_csv(tmp_path / "wine.csv", index=False)
    for estimator in ("lightgbm", "xgboost"):
        result = train_file(tmp_path / "wine.csv", "target", estimator=estimator, dest=tmp_path / estimator,
                            params={"n_estimators": 10})
        assert result.manifest.classes == [0, 1, 2] and result.manifest.parity.max_rel_diff <= REL


def test_xgboost_takes_text_labels_and_auto_compares_it_too(cli, capsys, tmp_path):
    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.to_csv(tmp_path / "wine.csv", index=False)
    assert cli("train", tmp_path / "wine.csv", "--target", "target", "--estimator", "xgboost",
               "--param", "n_estimators=10", "--out", tmp_path / "x") == 0
    bundle = tabserve.load(tmp_path / "x")
    assert bundle.manifest.classes == ["barbera", "barolo", "grignolino"]
    assert bundle.manifest.parity.label_mismatches == 0 and bundle.manifest.parity.max_rel_diff <= REL
    X = frame.drop(columns="target").to_numpy()
    assert set(bundle.predict(X).tolist()) == {"barbera", "barolo", "grignolino"}
    result = train_file(tmp_path / "wine.csv", "target", estimator="auto", dest=tmp_path / "auto")
    assert list(result.manifest.training["auto"]) == ["linear", "random_forest", "gradient_boosting", "lightgbm",
                                                       "xgboost"]


def test_a_missing_boosting_library_names_the_extra(cli, capsys, tables, tmp_path, monkeypatch):
    from tabserve.training import auto, estimators

    monkeypatch.setattr(estimators, "installed", lambda name: name != "lightgbm")
    monkeypatch.setattr(auto, "installed", lambda name: name != "lightgbm")
    assert cli("train", tables["diabetes"], "--target", "target", "--estimator", "lightgbm",
               "--out", tmp_path / "x") == 2
    assert "--estimator lightgbm needs the lightgbm library, which is not installed: pip install " \
        "'tabserve[boost]'" in capsys.readouterr().err
    assert "lightgbm" not in auto.families()
