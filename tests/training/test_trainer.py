"""Training on real datasets: sensible metrics, parity recorded, and the bundle answers as sklearn does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tabserve
from tabserve.errors import BundleError
from tabserve.training import TrainResult, train_file

PROBS = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]


def _features(path: Path, result: TrainResult) -> np.ndarray:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return frame[result.manifest.feature_names].to_numpy()


def _assert_bundle_matches_sklearn(path: Path, result: TrainResult) -> None:
    """Every row of the file, through ``tabserve.load``: labels equal, numbers within 1e-9 relative."""
    X = _features(path, result)
    model = tabserve.load(result.path)
    if model.is_classifier:
        assert list(model.predict(X)) == list(result.pipeline.predict(X))
        np.testing.assert_allclose(model.predict_proba(X), result.pipeline.predict_proba(X), rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(model.predict(X), result.pipeline.predict(X), rtol=1e-9, atol=1e-12)


def _assert_parity_passed(result: TrainResult) -> None:
    parity = result.manifest.parity
    holdout = result.manifest.training["rows_holdout"]
    assert parity is not None and parity.passed and parity.label_mismatches == 0
    assert parity.rows_checked == holdout + parity.adversarial_rows and holdout == result.manifest.metrics["rows"]
    assert parity.checked_on == ("holdout+adversarial" if parity.adversarial_rows else "holdout")
    assert parity.max_rel_diff <= 1e-9 and parity.rtol == 1e-9 and len(parity.worst_rows) <= 5


def test_diabetes_regression_gradient_boosting(data_dir, tmp_path):
    path = data_dir / "diabetes.csv"
    messages: list[str] = []
    result = train_file(path, "target", estimator="gradient_boosting", home=tmp_path,
                        progress=messages.append, params={"n_estimators": 50})
    m = result.manifest
    assert result.path == tmp_path / "models" / "diabetes" / "1"
    assert (m.name, m.version, m.task) == ("diabetes", "1", "regression")
    assert m.outputs[0].model_dump() == {"name": "prediction", "dtype": "float64", "shape": [None],
                                         "role": "prediction"}
    assert m.input is not None and m.input.dtype == "float64" and m.categorical_input is None
    assert m.training["exporter"].startswith("tabserve-exact")
    assert m.parity is not None and m.parity.adversarial_rows > 100  # split thresholds of 50 trees
    assert m.classes is None and m.target is not None and m.target.name == "target"
    assert 0.3 < m.metrics["r2"] < 1 and m.metrics["rmse"] > m.metrics["mae"] > 0
    assert m.training["estimator"] == "gradient_boosting" and m.training["params"]["n_estimators"] == 50
    assert m.training["rows_train"] == 353 and m.training["rows_holdout"] == 89 and m.training["seed"] == 42
    assert m.lineage.data == {"fingerprint": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
                              "rows": 442, "columns": 11}
    assert [line[:5] for line in messages] == [f"[{i}/6]" for i in range(1, 7)]
    assert "regression: target 'target' holds floating-point numbers; pass --task to choose" in messages[1]
    _assert_parity_passed(result)
    _assert_bundle_matches_sklearn(path, result)


def test_diabetes_random_forest_default(data_dir, tmp_path):
    result = train_file(data_dir / "diabetes.csv", "target", home=tmp_path)
    assert result.manifest.training["params"]["n_estimators"] == 100
    assert result.manifest.training["model"] == "RandomForestRegressor"
    _assert_parity_passed(result)


def test_breast_cancer_binary_random_forest(data_dir, tmp_path):
    path = data_dir / "breast_cancer.parquet"
    result = train_file(path, "target", home=tmp_path, params={"n_estimators": 30})
    m = result.manifest
    assert m.task == "classification" and m.classes == [0, 1]
    assert all(type(c) is int for c in m.classes)
    assert [(o.role, o.name, o.dtype, o.shape) for o in m.outputs] == [
        ("label", "label", "int64", [None]), ("probabilities", "probabilities", "float64", [None, 2])]
    assert m.metrics["accuracy"] > 0.9 and m.metrics["f1"] > 0.9 and m.metrics["roc_auc"] > 0.95
    assert len(m.features) == 30 and m.training["rows_holdout"] == 114
    _assert_parity_passed(result)
    _assert_bundle_matches_sklearn(path, result)


def test_iris_string_labels_extra_trees(data_dir, tmp_path):
    path = data_dir / "iris.csv"
    result = train_file(path, "species", estimator="extra_trees", name="iris", dest=tmp_path / "b" / "7",
                        params={"n_estimators": 30})
    m = result.manifest
    assert result.path == tmp_path / "b" / "7" and m.version == "7"
    assert m.classes == ["setosa", "versicolor", "virginica"]
    assert [(o.role, o.dtype, o.shape) for o in m.outputs] == [
        ("label", "str", [None]), ("probabilities", "float64", [None, 3])]
    assert m.target is not None and m.target.dtype in ("object", "str")
    assert m.metrics["accuracy"] > 0.85 and m.metrics["roc_auc"] > 0.9
    _assert_parity_passed(result)
    _assert_bundle_matches_sklearn(path, result)
    labels = tabserve.load(result.path).predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert list(labels) == ["setosa", "virginica"]


def test_iris_linear_and_feature_stats(data_dir, tmp_path):
    result = train_file(data_dir / "iris.csv", "species", estimator="linear", dest=tmp_path / "iris")
    m = result.manifest
    assert m.version == "1" and m.training["model"] == "LogisticRegression"
    stats = m.features[0].stats
    assert stats is not None and stats.count == 120 and stats.missing == 0  # the training split
    assert stats.quantiles.probs == PROBS and stats.quantiles.values[0] == stats.min
    assert stats.min <= stats.mean <= stats.max and stats.std > 0
    _assert_parity_passed(result)
    _assert_bundle_matches_sklearn(data_dir / "iris.csv", result)


def test_linear_regression(data_dir, tmp_path):
    result = train_file(data_dir / "diabetes.csv", "target", estimator="linear", home=tmp_path)
    assert result.manifest.training["model"] == "LinearRegression" and result.manifest.metrics["r2"] > 0.3
    _assert_parity_passed(result)


def test_versions_increase_and_out_is_guarded(data_dir, tmp_path):
    first = train_file(data_dir / "iris.csv", "species", estimator="linear", home=tmp_path)
    second = train_file(data_dir / "iris.csv", "species", estimator="linear", home=tmp_path)
    assert (first.manifest.version, second.manifest.version) == ("1", "2")
    with pytest.raises(BundleError, match=r"already exists.*--overwrite"):
        train_file(data_dir / "iris.csv", "species", estimator="linear", dest=first.path)
    again = train_file(data_dir / "iris.csv", "species", estimator="linear", dest=first.path, overwrite=True)
    assert again.path == first.path
    assert sorted(p.name for p in (tmp_path / "models" / "iris").iterdir()) == ["1", "2"]  # no temp folders


def test_lineage(data_dir, tmp_path):
    m = train_file(data_dir / "iris.csv", "species", estimator="linear", home=tmp_path).manifest
    assert set(m.lineage.libraries) >= {"python", "tabserve", "scikit-learn", "onnx", "onnxruntime", "numpy",
                                        "pandas"}
    assert m.lineage.created_at.endswith("Z") and m.lineage.source.endswith("iris.csv")
    assert m.training["source"] == "iris.csv" and m.training["test_size"] == 0.2


def test_tampered_bundle_is_refused(data_dir, tmp_path):
    result = train_file(data_dir / "iris.csv", "species", estimator="linear", home=tmp_path)
    onnx_file = result.path / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        tabserve.load(result.path)
