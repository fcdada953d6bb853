"""Explanations from the explain arrays alone equal shap.TreeExplainer / shap.LinearExplainer within 1e-6, and
contributions + expected value = the model's own raw output within 1e-6, for every supported family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.explain.artifact import from_bytes
from tabserve.core.explain.explainer import Explainer
from tabserve.core.explain.treeshap import explain_numpy, saabas_numpy
from tabserve.core.manifest import Feature
from tabserve.training.explain_data import build_explain

shap = pytest.importorskip("shap")
TOL = 1e-6
ROWS = 25


def _data(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        return X, y / 100, "regression"  # targets of order 1: XGBoost's float32 SHAP keeps ~1e-7 of them
    if name == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        return X[:, :8], y, "classification"
    X, y = load_iris(return_X_y=True)
    return X, y, "classification"


def _explainer(model: Any, X: np.ndarray, task: str) -> tuple[Explainer, list[Feature], pd.DataFrame]:
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]
    rows = pd.DataFrame(X, columns=[f.name for f in features])
    built = build_explain(model, features, task, rows)  # type: ignore[arg-type]
    assert built.data is not None, built.reason
    return Explainer(from_bytes(built.data), [f.name for f in features], "X"), features, rows


def _shap_3d(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr[:, :, None] if arr.ndim == 2 else arr  # [rows, features, outputs]


def _raw(model: Any, X: np.ndarray, space: str) -> np.ndarray:
    final = model[-1] if isinstance(model, Pipeline) else model
    cols = model[:-1].transform(X) if isinstance(model, Pipeline) else X
    if space == "probability":
        return final.predict_proba(cols)
    if hasattr(final, "decision_function") and space == "margin":
        raw = final.decision_function(cols)
    elif type(final).__module__.startswith("lightgbm"):
        raw = final.predict(cols, raw_score=True)
    elif type(final).__module__.startswith("xgboost"):
        raw = final.predict(cols, output_margin=True)
    else:
        raw = final.predict(cols)
    return np.asarray(raw, dtype=np.float64).reshape(len(cols), -1)


def _check(model: Any, data: str, shap_model: Any = None) -> Explainer:
    X, y, task = _data(data)
    model.fit(X, y)
    explainer, _, _ = _explainer(model, X, task)
    rows = X[:ROWS]
    got = explainer.explain(rows)
    # contributions + expected value = the model's own output, in the explained space
    total = got.contributions.sum(axis=2) + got.expected_value
    np.testing.assert_allclose(total, got.output, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.output, _raw(model, rows, got.space), rtol=TOL, atol=TOL)
    # the same values as shap
    reference = shap.TreeExplainer(shap_model if shap_model is not None else model)
    cols = model[:-1].transform(rows) if isinstance(model, Pipeline) else rows
    expected = _shap_3d(reference.shap_values(cols, check_additivity=False)).transpose(0, 2, 1)
    np.testing.assert_allclose(got.contributions, expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.expected_value, np.atleast_1d(reference.expected_value), rtol=0, atol=TOL)
    return explainer


@pytest.mark.parametrize("model", [
    RandomForestRegressor(n_estimators=15, max_depth=7, random_state=0),
    ExtraTreesRegressor(n_estimators=15, max_depth=7, random_state=0),
    GradientBoostingRegressor(n_estimators=30, max_depth=4, random_state=0),
    HistGradientBoostingRegressor(max_iter=30, random_state=0),
], ids=lambda m: type(m).__name__)
def test_sklearn_regressors_equal_shap(model: Any) -> None:
    _check(model, "diabetes")


@pytest.mark.parametrize("model,data", [
    (RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0), "iris"),
    (ExtraTreesClassifier(n_estimators=15, max_depth=6, random_state=0), "binary"),
    (GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0), "binary"),
    (HistGradientBoostingClassifier(max_iter=30, random_state=0), "binary"),
], ids=lambda m: type(m).__name__ if not isinstance(m, str) else m)
def test_sklearn_classifiers_equal_shap_per_class(model: Any, data: str) -> None:
    explainer = _check(model, data)
    forest = isinstance(model, RandomForestClassifier | ExtraTreesClassifier)  # class probabilities, each
    expected = ["0", "1", "2"] if data == "iris" else ["0", "1"] if forest else ["1"]  # else the log-odds
    assert explainer.artifact.outputs == expected


def test_a_standard_scaler_before_the_trees_leaves_the_values_unchanged() -> None:
    forest = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0)
    pipeline = Pipeline([("scaler", StandardScaler()), ("model", forest)])
    X, y, _ = _data("diabetes")
    pipeline.fit(X, y)
    explainer, _, _ = _explainer(pipeline, X, "regression")
    got = explainer.explain(X[:ROWS])
    expected = shap.TreeExplainer(forest).shap_values(pipeline[:-1].transform(X[:ROWS]))
    np.testing.assert_allclose(got.contributions[:, 0, :], expected, rtol=0, atol=TOL)


def test_lightgbm_equals_shap() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    for model, data in ((lightgbm.LGBMRegressor(n_estimators=30, num_leaves=15, verbose=-1), "diabetes"),
                        (lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1), "iris"),
                        (lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1), "binary")):
        _check(model, data)


def test_xgboost_equals_shap() -> None:
    xgboost = pytest.importorskip("xgboost")
    for model, data in ((xgboost.XGBRegressor(n_estimators=30, max_depth=4), "diabetes"),
                        (xgboost.XGBClassifier(n_estimators=30, max_depth=4), "iris"),
                        (xgboost.XGBClassifier(n_estimators=30, max_depth=4), "binary")):
        _check(model, data)


def test_multiclass_gradient_boosting_equals_brute_force_shapley() -> None:
    """shap does not explain a multiclass GradientBoostingClassifier: compare with the Shapley values of the
    path-dependent value function, enumerated over all subsets of the 4 iris features."""
    X, y, _ = _data("iris")
    model = GradientBoostingClassifier(n_estimators=8, max_depth=3, random_state=0).fit(X, y)
    explainer, _, _ = _explainer(model, X, "classification")
    rows = X[::30]
    got = explainer.explain(rows).contributions
    np.testing.assert_allclose(got, _brute_force(model, rows), rtol=0, atol=TOL)


def _brute_force(model: GradientBoostingClassifier, rows: np.ndarray) -> np.ndarray:
    from itertools import combinations
    from math import factorial

    def value(tree: Any, x: np.ndarray, known: set[int], node: int = 0) -> float:
        if tree.children_left[node] < 0:
            return float(tree.value[node, 0, 0])
        f, left, right = tree.feature[node], tree.children_left[node], tree.children_right[node]
        if f in known:
            return value(tree, x, known, left if np.float32(x[f]) <= tree.threshold[node] else right)
        w = tree.weighted_n_node_samples
        return (w[left] * value(tree, x, known, left) + w[right] * value(tree, x, known, right)) / w[node]

    n_features, k = rows.shape[1], model.estimators_.shape[1]
    out = np.zeros((len(rows), k, n_features))
    for r, x in enumerate(rows):
        for c in range(k):
            def f(known: set[int], c: int = c, x: np.ndarray = x) -> float:
                return sum(model.learning_rate * value(e.tree_, x, known) for e in model.estimators_[:, c])
            for i in range(n_features):
                others = [j for j in range(n_features) if j != i]
                for size in range(n_features):
                    weight = factorial(size) * factorial(n_features - size - 1) / factorial(n_features)
                    for subset in combinations(others, size):
                        out[r, c, i] += weight * (f(set(subset) | {i}) - f(set(subset)))
    return out


def test_linear_models_equal_shap_linear_explainer() -> None:
    for model, data in ((Pipeline([("s", StandardScaler()), ("m", LinearRegression())]), "diabetes"),
                        (Pipeline([("s", StandardScaler()), ("m", LogisticRegression(max_iter=500))]), "iris")):
        X, y, task = _data(data)
        model.fit(X, y)
        explainer, _, _ = _explainer(model, X, task)
        got = explainer.explain(X[:ROWS])
        cols = model[:-1].transform(X)
        reference = shap.LinearExplainer(model[-1], shap.maskers.Independent(cols, max_samples=len(cols)))
        expected = _shap_3d(reference.shap_values(cols[:ROWS])).transpose(0, 2, 1)
        np.testing.assert_allclose(got.contributions, expected, rtol=0, atol=TOL)
        total = got.contributions.sum(axis=2) + got.expected_value
        np.testing.assert_allclose(total, _raw(model, X[:ROWS], "margin"), rtol=0, atol=TOL)


def test_numpy_fallback_and_saabas_agree_with_the_compiled_kernels() -> None:
    X, y, _ = _data("iris")
    model = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0).fit(X, y)
    explainer, _, _ = _explainer(model, X, "classification")
    assert explainer.plan is not None
    exact, approximate = explainer.explain(X[:10]), explainer.explain(X[:10], "approximate")
    phi, out = explain_numpy(explainer.plan, X[:10])
    np.testing.assert_allclose(phi, exact.contributions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out, exact.output, rtol=0, atol=1e-12)
    reference = shap.TreeExplainer(model).shap_values(X[:10], approximate=True).transpose(0, 2, 1)
    np.testing.assert_allclose(approximate.contributions, reference, rtol=0, atol=TOL)
    np.testing.assert_allclose(saabas_numpy(explainer.plan, X[:10])[0], reference, rtol=0, atol=TOL)
    np.testing.assert_allclose(approximate.contributions.sum(axis=2) + approximate.expected_value,
                               exact.output, rtol=0, atol=TOL)


def test_missing_values_follow_the_model_and_still_add_up() -> None:
    X, y, _ = _data("diabetes")
    X = X.copy()
    X[np.random.default_rng(0).random(X.shape) < 0.2] = np.nan
    model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X, y)
    explainer, _, _ = _explainer(model, X, "regression")
    got = explainer.explain(X[:ROWS])
    np.testing.assert_allclose(got.output[:, 0], model.predict(X[:ROWS]), rtol=0, atol=TOL)
    np.testing.assert_allclose(got.contributions.sum(axis=2) + got.expected_value, got.output, rtol=0, atol=TOL)
