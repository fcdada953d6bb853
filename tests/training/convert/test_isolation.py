"""IsolationForest: score_samples and decision_function within 1e-9 relative of scikit-learn's and the
same -1/1 labels (feature subsets, contamination, NaN, behind a scaler); a bundle of one has the task
'anomaly' (tests/training/test_import_anomaly.py), a regression or classification bundle is refused."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.errors import ExportError
from tabserve.training.convert import FeatureSpec, export_exact
from tabserve.training.convert.isolation import export_anomaly
from tests.training.convert.conftest import _check_rows

FORESTS = {
    "default": lambda: IsolationForest(n_estimators=50, random_state=0),
    "contamination": lambda: IsolationForest(n_estimators=30, contamination=0.1, random_state=0),
    "feature_subsets": lambda: IsolationForest(n_estimators=30, max_features=0.5, max_samples=64,
                                               random_state=0),
    "bootstrap": lambda: IsolationForest(n_estimators=20, bootstrap=True, max_samples=0.5, random_state=0),
}


def _run(model, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(export_anomaly(model, rows.shape[1]), providers=["CPUExecutionProvider"])
    return dict(zip(("score_samples", "decision", "label"), session.run(None, {"X": rows}), strict=True))


def _check(model, rows: np.ndarray) -> None:
    out = _run(model, rows)
    for name, expected in (("score_samples", model.score_samples(rows)),
                           ("decision", model.decision_function(rows))):
        error = np.abs(out[name] - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
        assert error.max() <= 1e-9, f"{name}: max relative error {error.max():.3g}"
    np.testing.assert_array_equal(out["label"], model.predict(rows))
    assert set(np.unique(out["label"])) <= {-1, 1}


@pytest.mark.parametrize("name", FORESTS)
@pytest.mark.parametrize("dataset", ["diabetes", "breast_cancer"])
def test_isolation_forest(dataset, name, request):
    X = request.getfixturevalue(dataset).X
    model = FORESTS[name]().fit(X)
    _check(model, _check_rows(model, X))


def test_missing_values_follow_the_trees(diabetes, with_nan):
    X = with_nan(diabetes.X)
    model = IsolationForest(n_estimators=30, random_state=0).fit(X)
    _check(model, _check_rows(model, X))


def test_behind_a_scaler(diabetes):
    model = make_pipeline(StandardScaler(), IsolationForest(n_estimators=30, random_state=0)).fit(diabetes.X)
    rows = np.vstack([diabetes.X, diabetes.X * 4])
    out = _run(model, rows)
    np.testing.assert_allclose(out["score_samples"], model.score_samples(rows), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(out["label"], model.predict(rows))


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_regression_or_classification_bundle_of_an_anomaly_detector_is_refused(diabetes, task):
    model = IsolationForest(n_estimators=5, random_state=0).fit(diabetes.X)
    with pytest.raises(ExportError, match="ends in an anomaly detector.*task 'anomaly'"):
        export_exact(model, [FeatureSpec(f"f{i}") for i in range(diabetes.X.shape[1])], task)
