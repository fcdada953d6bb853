"""`tabserve import` in the user's terms: a pickled LightGBM model fitted on columns with spaces imports with
its own sample, extra sample columns are left out when --target/--ignore name them (and refused, named,
when not), and an unsupported step is named as the user wrote it, without the exporter's class names."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.linear_model import SGDOneClassSVM
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

lgb = pytest.importorskip("lightgbm")

SPACED = {"age": "age (years)", "bmi": "body mass index", "bp": "blood pressure (mm Hg)", "s1": "total serum"}


@pytest.fixture(scope="module")
def spaced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """diabetes with spaces in four column names, a LGBMRegressor pickled after fitting on that DataFrame,
    and its sample with the target and an id column."""
    folder = tmp_path_factory.mktemp("names")
    frame = load_diabetes(as_frame=True).frame.rename(columns=SPACED)
    X, y = frame.drop(columns="target"), frame["target"]
    model = lgb.LGBMRegressor(n_estimators=30, verbose=-1, num_threads=1).fit(X, y)
    assert "body_mass_index" in model.feature_name_  # LightGBM's own spelling of the column
    paths = {"model": folder / "spaced.pkl", "sample": folder / "spaced.csv", "with_id": folder / "with_id.csv"}
    paths["model"].write_bytes(pickle.dumps(model))
    frame.to_csv(paths["sample"], index=False)
    frame.assign(patient_id=np.arange(len(frame))).to_csv(paths["with_id"], index=False)
    return paths


def test_lightgbm_pickle_with_spaces_imports_with_its_own_sample(cli, capsys, spaced, tmp_path):
    assert cli("import", spaced["model"], "--sample", spaced["sample"], "--target", "target",
               "--trust-pickle", "--out", tmp_path / "b") == 0
    out, err = capsys.readouterr()
    assert "parity:   passed" in out
    assert "as the model spells them (LightGBM writes spaces as '_')" in err
    manifest = json.loads((tmp_path / "b" / "tabserve.json").read_text())
    assert [f["name"] for f in manifest["features"]] == [c for c in pd.read_csv(spaced["sample"]).columns
                                                         if c != "target"]  # the user's names, spaces kept
    assert manifest["parity"]["max_rel_diff"] <= 1e-9


def test_an_id_column_is_refused_by_name_unless_ignored(cli, capsys, spaced, tmp_path):
    assert cli("import", spaced["model"], "--sample", spaced["with_id"], "--target", "target",
               "--trust-pickle", "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "has column(s) 'patient_id' the model does not take" in err
    assert "with --ignore COLUMN" in err and not (tmp_path / "x").exists()

    assert cli("import", spaced["model"], "--sample", spaced["with_id"], "--target", "target",
               "--ignore", "patient_id", "--trust-pickle", "--out", tmp_path / "ok") == 0
    manifest = json.loads((tmp_path / "ok" / "tabserve.json").read_text())
    assert "patient_id" not in [f["name"] for f in manifest["features"]]
    assert manifest["training"]["ignored_columns"] == ["patient_id"]
    assert manifest["parity"]["passed"]


def test_target_and_id_both_left_out_without_target_metrics(cli, capsys, spaced, tmp_path):
    assert cli("import", spaced["model"], "--sample", spaced["with_id"], "--ignore", "patient_id,target",
               "--trust-pickle", "--out", tmp_path / "ok") == 0
    manifest = json.loads((tmp_path / "ok" / "tabserve.json").read_text())
    assert len(manifest["features"]) == 10 and manifest["training"]["ignored_columns"] == ["patient_id", "target"]


def test_ignoring_a_column_the_sample_lacks_is_refused(cli, capsys, spaced, tmp_path):
    assert cli("import", spaced["model"], "--sample", spaced["sample"], "--target", "target", "--ignore", "id",
               "--trust-pickle", "--out", tmp_path / "x") == 2
    assert "has no column(s) 'id' (given to --ignore); columns are: " in capsys.readouterr().err


def test_an_unsupported_step_is_named_as_the_user_wrote_it(cli, capsys, tmp_path):
    X = load_diabetes(as_frame=True).data
    y = load_diabetes().target
    model = Pipeline([("scale", StandardScaler()), ("gp", GaussianProcessRegressor())]).fit(X[:100], y[:100])
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    X.to_csv(tmp_path / "x.csv", index=False)
    assert cli("import", tmp_path / "m.pkl", "--sample", tmp_path / "x.csv", "--trust-pickle",
               "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "error: step 2 'gp' (GaussianProcessRegressor) has no exact ONNX export" in err
    assert "replace it with a supported step, or train the model with `tabserve train`" in err
    assert "LinearRegression, Ridge" in err
    for internal in ("LinearModel", "NativeRegressor", "NativeClassifier", "lightgbm.sklearn.", "_passive"):
        assert internal not in err


def test_an_anomaly_detector_is_refused_as_one_before_anything_is_written(cli, capsys, tmp_path):
    X = load_diabetes(as_frame=True).data
    model = Pipeline([("scale", StandardScaler()), ("detector", SGDOneClassSVM(random_state=0))]).fit(X)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    X.to_csv(tmp_path / "x.csv", index=False)
    assert cli("import", tmp_path / "m.pkl", "--sample", tmp_path / "x.csv", "--task", "regression",
               "--trust-pickle", "--out", tmp_path / "x") == 2
    assert "holds an anomaly detector (SGDOneClassSVM); tabserve serves regression and classification models, " \
        "and IsolationForest for anomaly scoring" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_every_column_of_a_frame_sample_is_matched_in_the_models_order(spaced):
    frame = pd.read_csv(spaced["sample"])
    model = pickle.loads(spaced["model"].read_bytes())
    from tabserve.training.estimators import model_input

    rows = model_input(model, frame.drop(columns="target"))
    assert list(rows.columns) == list(model.feature_name_)
    assert np.array_equal(model.predict(rows), model.predict(frame.drop(columns="target")))


def test_a_refused_setting_names_the_step_it_belongs_to(cli, capsys, tmp_path):
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = Pipeline([("scale", StandardScaler()), ("knn", KNeighborsRegressor(metric="cosine"))]).fit(X, y)
    (tmp_path / "knn.pkl").write_bytes(pickle.dumps(model))
    X.to_csv(tmp_path / "x.csv", index=False)
    assert cli("import", tmp_path / "knn.pkl", "--sample", tmp_path / "x.csv", "--trust-pickle",
               "--out", tmp_path / "x") == 2
    assert ("error: step 2 'knn' (KNeighborsRegressor): KNeighborsRegressor(metric='cosine') has no exact "
            "converter; use metric='minkowski'") in capsys.readouterr().err
