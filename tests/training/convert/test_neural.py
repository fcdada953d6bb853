"""MLPs: every activation, regression and classification, within 1e-9 of scikit-learn, identical labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.errors import ExportError
from tabserve.training.export import export_onnx

ACTIVATIONS = ["relu", "tanh", "logistic", "identity"]
pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


def _rows(X: np.ndarray) -> np.ndarray:
    """The data, random rows in its range, and rows far outside it (saturated activations)."""
    rng = np.random.default_rng(0)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return np.vstack([X, rng.uniform(lo, hi, size=(300, X.shape[1])), X * 3, -X])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_regressor(activation, exact):
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16, 8), activation=activation,
                                                         max_iter=200, random_state=0)).fit(X, y)
    exact(model, _rows(X), "regression", probe=False)


def test_poisson_regressor_exponentiates_its_output(exact):
    if "loss" not in MLPRegressor().get_params():
        pytest.skip("MLPRegressor has loss='poisson' from scikit-learn 1.7 on")
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), MLPRegressor(loss="poisson", hidden_layer_sizes=(8,),
                                                         max_iter=200, random_state=0)).fit(X, y)
    exact(model, _rows(X), "regression", probe=False)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris, load_wine], ids=lambda f: f.__name__[5:])
def test_classifier(activation, loader, exact):
    X, y = loader(return_X_y=True)
    if loader is load_breast_cancer:
        y = np.array(["benign", "malignant"], dtype=object)[y]  # string labels, binary
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16, 8), activation=activation,
                                                          max_iter=200, random_state=0)).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


def test_a_binary_label_is_p_over_one_half(run):
    """LabelBinarizer gives class 1 where p > 0.5; a row with p exactly 0.5 gets class 0."""
    X = np.array([[-1.0], [1.0], [-2.0], [2.0]])
    model = MLPClassifier(hidden_layer_sizes=(2,), activation="identity", max_iter=50, random_state=0)
    model.fit(X, [0, 1, 0, 1])
    for coef in model.coefs_:
        coef[...] = 1.0
    for intercept in model.intercepts_:
        intercept[...] = 0.0
    rows = np.array([[0.0], [1e-300], [-1e-300], [3.0]])  # output exactly 0: p = 0.5
    labels, probabilities = run(model, rows, "classification")
    assert probabilities[0].tolist() == [0.5, 0.5]
    np.testing.assert_array_equal(labels, model.predict(rows))
    assert labels[0] == 0


def test_multilabel_and_multi_target_models_are_refused():
    X = np.random.default_rng(0).normal(size=(40, 3))
    two = np.column_stack([X[:, 0] > 0, X[:, 1] > 0]).astype(int)
    with pytest.raises(ExportError, match="multilabel-indicator"):
        export_onnx(MLPClassifier(max_iter=20, random_state=0).fit(X, two), 3, "classification")
    with pytest.raises(ExportError, match="predicts 2 targets"):
        export_onnx(MLPRegressor(max_iter=20, random_state=0).fit(X, X[:, :2]), 3, "regression")
