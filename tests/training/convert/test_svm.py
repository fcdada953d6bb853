"""Kernel SVMs: libsvm's values, votes and pairwise-coupled probabilities within 1e-9, identical labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR, NuSVC, NuSVR

from tabserve.errors import ExportError
from tabserve.training.export import export_onnx

KERNELS = ["linear", "poly", "rbf", "sigmoid"]
# SVC(probability=True) is deprecated from scikit-learn 1.9 on, and still exported while it exists
pytestmark = pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")
LOADERS = [load_breast_cancer, load_iris, load_wine]


def _rows(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return np.vstack([X, rng.uniform(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), size=(1000, X.shape[1])),
                      X * 1.5])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("regressor", [SVR(C=10.0), NuSVR(C=10.0, nu=0.3)], ids=lambda m: type(m).__name__)
def test_regressors(kernel, regressor, exact):
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), regressor.set_params(kernel=kernel)).fit(X, y)
    exact(model, _rows(X), "regression", probe=False)


@pytest.mark.parametrize("degree", [0, 1, 2, 5])
def test_poly_degrees_square_as_libsvm(degree, exact):
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), SVR(kernel="poly", degree=degree, coef0=0.5, C=10.0)).fit(X, y)
    exact(model, _rows(X), "regression", probe=False)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
@pytest.mark.parametrize("estimator", [SVC(probability=True, random_state=0),
                                       NuSVC(nu=0.1, probability=True, random_state=0)],
                         ids=lambda m: type(m).__name__)
def test_probabilities_binary_and_multiclass(kernel, loader, estimator, exact):
    """libsvm's probabilities come from an iterative solver (binary too); labels from the votes."""
    X, y = loader(return_X_y=True)
    if loader is load_breast_cancer:
        y = np.array(["benign", "malignant"], dtype=object)[y]
    model = make_pipeline(StandardScaler(), estimator.set_params(kernel=kernel)).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


@pytest.mark.parametrize("break_ties", [False, True])
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
def test_labels_and_decision_function_without_probabilities(loader, break_ties, run):
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), SVC(kernel="rbf", break_ties=break_ties)).fit(X, y)
    rows = _rows(X)
    labels, decision = run(model, rows, "classification")
    np.testing.assert_array_equal(labels, model.predict(rows))
    expected = model.decision_function(rows)
    np.testing.assert_allclose(decision, expected, rtol=1e-9, atol=1e-12)


def test_votes_break_ties_as_libsvm(run):
    """Where each of three classes wins one pair, libsvm takes the first class; break_ties the largest
    ovr value."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), rng.integers(0, 3, 30)  # noise: three-way ties between the classes
    grid = np.array([[a, b] for a in np.linspace(-3, 3, 81) for b in np.linspace(-3, 3, 81)])
    labels = {}
    for ties in (False, True):
        model = SVC(kernel="rbf", C=10.0, break_ties=ties).fit(X, y)
        labels[ties] = run(model, grid, "classification")[0]
        np.testing.assert_array_equal(labels[ties], model.predict(grid))
    assert (labels[False] != labels[True]).any()  # the grid reaches three-way ties


def test_precomputed_and_callable_kernels_are_refused():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ExportError, match="kernel='precomputed'"):
        export_onnx(SVC(kernel="precomputed").fit(X @ X.T, y), 4, "classification")
    with pytest.raises(ExportError, match="linear, poly, rbf and sigmoid"):
        export_onnx(SVR(kernel=lambda a, b: a @ b.T).fit(X, X[:, 0]), 4, "regression")


def test_probabilities_of_ten_classes_past_the_unrolled_iterations(exact):
    """digits: about half its rows need more coupling iterations than the graph unrolls (the rest run in
    its Loop); every probability still libsvm's within 1e-9."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)).fit(X[:600], y[:600])
    exact(model, X, "classification", probe=False)
