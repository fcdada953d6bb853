"""LDA and QDA: probabilities within 1e-9 of scikit-learn, identical labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

LOADERS = [load_breast_cancer, load_iris, load_wine]
MODELS = {
    "lda_svd": LinearDiscriminantAnalysis,
    "lda_lsqr": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
    "lda_eigen": lambda: LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.1),
    "qda": lambda: QuadraticDiscriminantAnalysis(reg_param=0.01),
}


def _rows(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return np.vstack([X, rng.uniform(lo, hi, size=(500, X.shape[1])), X * 1.5])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
def test_discriminant_analysis(name, loader, exact):
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), MODELS[name]()).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


def test_binary_lda_with_string_labels_far_from_the_data(exact):
    X, y = load_breast_cancer(return_X_y=True)
    model = LinearDiscriminantAnalysis().fit(X, np.array(["benign", "malignant"], dtype=object)[y])
    exact(model, np.vstack([X, X * 3, -X]), "classification", probe=False)


def test_qda_eigen_solver_with_shrinkage(exact):
    if "solver" not in QuadraticDiscriminantAnalysis().get_params():
        pytest.skip("QuadraticDiscriminantAnalysis has a solver from scikit-learn 1.9 on")
    X, y = load_digits(return_X_y=True)
    model = QuadraticDiscriminantAnalysis(solver="eigen", shrinkage=0.2).fit(X[:1000] / 16, y[:1000])
    exact(model, X / 16, "classification", probe=False)
