"""Linear models: double precision values and probabilities within 1e-12 relative, identical labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_iris,
    make_classification,
    make_regression,
)
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    HuberRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    QuantileRegressor,
    Ridge,
    RidgeClassifier,
    SGDRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVR

from tabserve.core.manifest import Feature
from tabserve.errors import ExportError
from tabserve.training.export import export_onnx
from tabserve.training.parity import onnx_outputs

REL = 1e-12


def _features(X: np.ndarray) -> list[Feature]:
    return [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]


def _onnx(model, X: np.ndarray, task: str):
    features = _features(X)
    exported = export_onnx(model, features, task)
    return onnx_outputs(exported, pd.DataFrame(X, columns=[f.name for f in features]), features)


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300)))


@pytest.mark.parametrize("regressor", [LinearRegression(), Ridge(alpha=3.0), Lasso(alpha=0.1),
                                       ElasticNet(alpha=0.1, l1_ratio=0.3), BayesianRidge(),
                                       HuberRegressor(max_iter=500), SGDRegressor(random_state=0),
                                       LinearRegression(fit_intercept=False), ARDRegression(),
                                       QuantileRegressor(quantile=0.8, alpha=0.01), LinearSVR(random_state=0),
                                       SGDRegressor(loss="epsilon_insensitive", penalty=None, random_state=0)],
                         ids=repr)
def test_regressors_on_diabetes(regressor):
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), regressor).fit(X, y)
    out = _onnx(model, X, "regression")
    assert out.values.dtype == np.float64 and out.values.shape == (len(X),)
    assert _rel(out.values, model.predict(X)) < REL


def test_a_single_target_given_as_a_column_is_one_prediction():
    X, y = make_regression(n_samples=80, n_features=5, random_state=1)
    model = LinearRegression().fit(X, y.reshape(-1, 1))
    assert _rel(_onnx(model, X, "regression").values, model.predict(X).ravel()) < REL


@pytest.mark.parametrize("labels", [np.array(["benign", "malignant"], dtype=object), np.array([3, 8])])
def test_binary_logistic_regression_is_expit_of_the_decision(labels):
    data = load_breast_cancer()
    y = labels[data.target]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(data.data, y)
    # far from the training data too: probabilities of 1 - 1e-15 and 1e-300 must keep their digits
    X = np.vstack([data.data, data.data * 5, -data.data])
    out = _onnx(model, X, "classification")
    expected = model.predict_proba(X)
    assert _rel(out.probabilities, expected) < 1e-9
    assert list(out.values) == list(model.predict(X))
    assert out.probabilities.min() < 1e-12  # the extreme rows are in the test


def test_multinomial_logistic_regression_is_softmax():
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=2000)).fit(X, y)
    out = _onnx(model, np.vstack([X, X * 3]), "classification")
    expected = model.predict_proba(np.vstack([X, X * 3]))
    assert _rel(out.probabilities, expected) < 1e-9
    np.testing.assert_array_equal(out.values, model.predict(np.vstack([X, X * 3])))


def test_many_classes_and_features():
    X, y = make_classification(n_samples=400, n_features=40, n_informative=20, n_classes=9, random_state=3)
    model = LogisticRegression(max_iter=3000).fit(X, y)
    out = _onnx(model, X, "classification")
    assert _rel(out.probabilities, model.predict_proba(X)) < 1e-9
    np.testing.assert_array_equal(out.values, model.predict(X))


def test_multi_target_regression_is_refused():
    X, y = make_regression(n_samples=50, n_features=3, n_targets=2, random_state=0)
    with pytest.raises(ExportError, match="predicts 2 targets"):
        export_onnx(LinearRegression().fit(X, y), 3, "regression")


def test_a_classifier_without_probabilities_exports_labels_only():
    X, y = make_classification(n_samples=50, n_features=3, n_informative=2, n_redundant=0, random_state=0)
    exported = export_onnx(RidgeClassifier().fit(X, y), 3, "classification")
    assert [o["role"] for o in exported.outputs] == ["label"]


def test_a_regressor_cannot_be_exported_as_a_classifier():
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    with pytest.raises(ExportError, match="needs a classifier at the end"):
        export_onnx(Ridge().fit(X, y), 3, "classification")
