"""Missing numbers: a feature takes null where the model handles it (an imputer, or an estimator that routes NaN),
whatever the training data or sample held; the server then answers as scikit-learn does."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tabserve
from tabserve.core.manifest import Feature
from tabserve.errors import DataError
from tabserve.training import import_model, train_file
from tabserve.training.estimators import MISSING_IMPUTER
from tabserve.training.missing import accepting_missing

REL = 1e-9


@contextmanager
def _client(bundle: Path) -> Iterator[TestClient]:
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(bundle))
    with TestClient(app) as client:
        yield client


def _with_nulls(X: np.ndarray, seed: int) -> np.ndarray:
    """A copy with NaN in every column, several per row on some rows, none on others."""
    rng = np.random.default_rng(seed)
    out = X.astype(np.float64).copy()
    out[rng.random(out.shape) < 0.3] = np.nan
    out[::5] = X[::5]
    return out


def _json_rows(X: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in X]


def _v2(client: TestClient, manifest: Any, X: np.ndarray) -> list[Any]:
    assert manifest.input is not None
    body = {"inputs": [{"name": manifest.input.name, "shape": list(X.shape), "datatype": "FP64",
                        "data": _json_rows(X)}]}
    r = client.post(f"/v2/models/{manifest.name}/infer", json=body)
    assert r.status_code == 200, r.text
    return r.json()["outputs"][0]["data"]


@pytest.fixture(scope="module")
def iris_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    iris = load_iris(as_frame=True)
    X = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    y = np.asarray(iris.target_names)[iris.target]
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    X.assign(species=y).to_csv(path, index=False)
    return path, X, y


def test_an_imported_imputer_pipeline_takes_null_as_python_does(iris_sample, tmp_path):
    path, X, y = iris_sample
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(X, y)  # no NaN seen
    (pickled := tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    result = import_model(pickled, path, target="species", trust_pickle=True, dest=tmp_path / "b")
    assert all(f.allow_missing for f in result.manifest.features)  # the sample held no missing value
    rows = _with_nulls(X.to_numpy(), seed=1)
    frame = pd.DataFrame(rows, columns=X.columns)
    labels, proba = model.predict(frame), model.predict_proba(frame)
    with _client(result.path) as client:
        one = client.post("/api/v1/predict", json={"data": [5.1, None, 1.4, None]})
        assert one.status_code == 200, one.text
        single = pd.DataFrame([[5.1, np.nan, 1.4, np.nan]], columns=X.columns)
        assert one.json()["prediction"] == model.predict(single)[0]
        batch = client.post("/api/v1/predict/batch", json={"data": _json_rows(rows)})
        assert batch.status_code == 200, batch.text
        assert batch.json()["predictions"] == labels.tolist()
        assert _v2(client, result.manifest, rows) == labels.tolist()
    served = tabserve.load(result.path)
    np.testing.assert_allclose(served.predict_proba(rows), proba, rtol=REL, atol=1e-12)


def test_a_sample_with_missing_values_the_model_refuses(iris_sample, tmp_path):
    path, X, y = iris_sample
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    (pickled := tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    holes = X.assign(species=y)
    holes.loc[[4, 9], "petal_width"] = np.nan
    holes.to_csv(sample := tmp_path / "holes.csv", index=False)
    with pytest.raises(DataError, match="'petal_width' in the sample holes.csv hold missing values, but the model "
                                        "does not take them there \\(StandardScaler \\+ LogisticRegression\\)"):
        import_model(pickled, sample, target="species", trust_pickle=True, dest=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    # the same model without a missing value in the sample: null is refused by the server, named
    result = import_model(pickled, path, target="species", trust_pickle=True, dest=tmp_path / "ok")
    assert not any(f.allow_missing for f in result.manifest.features)
    with _client(result.path) as client:
        r = client.post("/api/v1/predict", json={"data": [5.1, None, 1.4, 0.2]})
    assert r.status_code == 422 and r.json()["feature"] == "sepal_width"


def _diabetes_with_holes(folder: Path) -> tuple[Path, pd.DataFrame]:
    frame = load_diabetes(as_frame=True).frame
    rng = np.random.default_rng(3)
    for col in ("bmi", "s5", "age"):
        frame.loc[rng.random(len(frame)) < 0.1, col] = np.nan
    frame.loc[[7, 70, 300], "target"] = np.nan
    frame.to_csv(path := folder / "diabetes_holes.csv", index=False)
    return path, frame


def _breast_cancer_with_holes(folder: Path) -> tuple[Path, pd.DataFrame]:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.iloc[:, [0, 1, 2, 7, 20, 21, 27, 30]].copy()
    frame["target"] = np.asarray(data.target_names)[data.target]
    rng = np.random.default_rng(4)
    for col in frame.columns[:3]:
        frame.loc[rng.random(len(frame)) < 0.1, col] = np.nan
    frame.to_csv(path := folder / "cancer_holes.csv", index=False)
    return path, frame


@pytest.mark.parametrize("estimator", ["linear", "gradient_boosting"])
@pytest.mark.parametrize("dataset", ["diabetes", "breast_cancer"])
def test_training_imputes_for_estimators_that_refuse_nan(estimator, dataset, tmp_path, capsys):
    path, frame = (_diabetes_with_holes if dataset == "diabetes" else _breast_cancer_with_holes)(tmp_path)
    params = {"n_estimators": 30} if estimator == "gradient_boosting" else None
    lines: list[str] = []
    result = train_file(path, "target", estimator=estimator, dest=tmp_path / "b", params=params,
                        progress=lines.append)
    m = result.manifest
    assert m.training["missing"] == MISSING_IMPUTER
    assert "SimpleImputer" in " ".join(lines)
    if dataset == "diabetes":
        assert any("dropped 3 row(s) without a target value (rows 7, 70, 300)" in line for line in lines)
    assert all(f.allow_missing for f in m.features)  # the imputer fills any of them
    assert m.parity is not None and m.parity.passed and m.parity.label_mismatches == 0
    assert m.parity.max_rel_diff <= REL and m.parity.probes["missing"] == len(m.features)

    X = frame.drop(columns="target").to_numpy(dtype=np.float64)
    rows = np.vstack([X, _with_nulls(X[:60], seed=5)])  # the file's own holes, and more
    expected = result.pipeline.predict(rows)
    with _client(result.path) as client:
        r = client.post("/api/v1/predict/batch", json={"data": _json_rows(rows)})
        assert r.status_code == 200, r.text
        if m.task == "regression":
            np.testing.assert_allclose(r.json()["predictions"], expected, rtol=REL, atol=1e-12)
        else:
            assert r.json()["predictions"] == expected.tolist()
            np.testing.assert_allclose(tabserve.load(result.path).predict_proba(rows),
                                       result.pipeline.predict_proba(rows), rtol=REL, atol=1e-12)


def test_hist_gradient_boosting_takes_null_in_every_feature(tmp_path):
    frame = load_diabetes(as_frame=True).frame  # no missing value
    frame.to_csv(path := tmp_path / "diabetes.csv", index=False)
    result = train_file(path, "target", estimator="hist_gradient_boosting", dest=tmp_path / "b",
                        params={"max_iter": 30})
    assert all(f.allow_missing for f in result.manifest.features) and "missing" not in result.manifest.training
    rows = _with_nulls(frame.drop(columns="target").to_numpy(), seed=6)
    with _client(result.path) as client:
        r = client.post("/api/v1/predict/batch", json={"data": _json_rows(rows)})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], result.pipeline.predict(rows), rtol=REL, atol=1e-12)


def test_integer_class_labels_with_missing_ones_stay_classes(tmp_path, small_frame):
    small_frame["label"] = (small_frame["a"] > 0).astype(int)
    small_frame.loc[[2, 6], "label"] = np.nan  # pandas reads the column as floats
    small_frame.drop(columns="y").to_csv(path := tmp_path / "data.csv", index=False)
    result = train_file(path, "label", estimator="linear", dest=tmp_path / "b")
    assert result.manifest.task == "classification" and result.manifest.classes == [0, 1]
    assert result.manifest.training["rows_without_target"] == 2


def _specs(*names: str) -> list[Feature]:
    return [Feature(name=n, dtype="float64") for n in names]


def test_which_features_accept_a_missing_value_follows_each_columns_path():
    rng = np.random.default_rng(8)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int)
    columns = ColumnTransformer([("filled", make_pipeline(StandardScaler(), SimpleImputer()), ["a"]),
                                 ("scaled", StandardScaler(), ["b"])])  # c is dropped: never read
    model = make_pipeline(columns, LogisticRegression()).fit(X, y)
    assert accepting_missing(model, _specs("a", "b", "c"), ()) == {"a", "c"}
    routed = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=3)).fit(X, y)
    assert accepting_missing(routed, _specs("a", "b", "c"), ()) == {"a", "b", "c"}
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    assert accepting_missing(forest, _specs("a", "b", "c"), {"b"}) == {"b"}  # only where fitted with NaN
    marker = make_pipeline(SimpleImputer(missing_values=-1.0), LogisticRegression()).fit(X, y)
    assert accepting_missing(marker, _specs("a", "b", "c"), ()) == set()  # -1 is its missing value, not NaN
    nested = make_pipeline(make_pipeline(columns, StandardScaler()), LogisticRegression()).fit(X, y)
    assert accepting_missing(nested, _specs("a", "b", "c"), ()) == {"a", "c"}
