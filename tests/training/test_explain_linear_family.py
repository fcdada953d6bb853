"""The linear family explains: contributions + expected value = the model's decision function (classifiers
without probabilities, SGD) or linear predictor (GLMs: the log of a log link's prediction), within 1e-6;
element-wise steps and feature selectors keep each column traceable to its feature."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_wine
from sklearn.feature_selection import SelectKBest, f_regression
from sklearn.linear_model import (
    PoissonRegressor,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
    TweedieRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Binarizer, FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC

from tabserve.core.explain.artifact import from_bytes
from tabserve.core.explain.explainer import Explainer
from tabserve.core.manifest import Feature
from tabserve.training.explain_data import build_explain

TOL = 1e-6


def _raw(model, X: np.ndarray) -> np.ndarray:
    final, cols = model[-1], model[:-1].transform(X)
    raw = final._linear_predictor(cols) if hasattr(final, "_linear_predictor") else (
        final.decision_function(cols) if hasattr(final, "decision_function") else final.predict(cols))
    return raw.reshape(len(X), -1)


@pytest.mark.parametrize(("estimator", "task", "space"), [
    (RidgeClassifier(), "classification", "margin"),
    (LinearSVC(random_state=0), "classification", "margin"),
    (SGDClassifier(loss="log_loss", random_state=0), "classification", "margin"),
    (SGDRegressor(random_state=0), "regression", "value"),
    (PoissonRegressor(), "regression", "margin"),
    (TweedieRegressor(power=0.0), "regression", "value"),
], ids=lambda v: type(v).__name__ if not isinstance(v, str) else v)
def test_linear_family_explains(estimator, task, space):
    X, y = (load_wine if task == "classification" else load_diabetes)(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), estimator).fit(X, y)
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]
    built = build_explain(model, features, task, pd.DataFrame(X, columns=[f.name for f in features]))
    assert built.data is not None, built.reason
    explainer = Explainer(from_bytes(built.data), [f.name for f in features], "X")
    got = explainer.explain(X[:30])
    assert got.space == space
    total = got.contributions.sum(axis=2) + got.expected_value
    np.testing.assert_allclose(total, _raw(model, X[:30]), rtol=0, atol=TOL)


def test_ufuncs_binarizer_and_selectors_keep_columns_traceable():
    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(FunctionTransformer(np.exp), SelectKBest(f_regression, k=6), Binarizer(threshold=1.0),
                          StandardScaler(), Ridge()).fit(X, y)
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]
    built = build_explain(model, features, "regression", pd.DataFrame(X, columns=[f.name for f in features]))
    assert built.data is not None, built.reason
    assert built.columns == [int(i) for i in model[1].get_support(indices=True)]
    got = Explainer(from_bytes(built.data), [f.name for f in features], "X").explain(X[:30])
    np.testing.assert_allclose(got.contributions.sum(axis=2)[:, 0] + got.expected_value[0], model.predict(X[:30]),
                               rtol=0, atol=TOL)
