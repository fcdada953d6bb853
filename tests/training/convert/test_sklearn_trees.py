"""scikit-learn trees and ensembles: the export reproduces values and probabilities to 1e-9 relative
(measured 0 without an exp; up to ~1e-14 with a sigmoid or softmax) and the labels exactly, on
data rows, random rows, rows at every split threshold (and one double or float32 step off) and NaN."""

from __future__ import annotations

import numpy as np
import pytest
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
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.registry import lookup

REGRESSORS = {
    "decision_tree": lambda: DecisionTreeRegressor(max_depth=8, random_state=0),
    "random_forest": lambda: RandomForestRegressor(n_estimators=12, max_depth=8, random_state=0),
    "extra_trees": lambda: ExtraTreesRegressor(n_estimators=12, max_depth=8, random_state=0),
    "gradient_boosting": lambda: GradientBoostingRegressor(n_estimators=25, max_depth=3, random_state=0),
    "gradient_boosting_huber_zero_init": lambda: GradientBoostingRegressor(
        n_estimators=15, loss="huber", init="zero", random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(max_iter=25, random_state=0),
    "hist_gradient_boosting_poisson": lambda: HistGradientBoostingRegressor(max_iter=20, loss="poisson"),
}
CLASSIFIERS = {
    "decision_tree": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "random_forest": lambda: RandomForestClassifier(n_estimators=12, max_depth=6, random_state=0),
    "extra_trees": lambda: ExtraTreesClassifier(n_estimators=12, max_depth=6, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
}
WITH_MISSING = ["decision_tree", "random_forest", "extra_trees", "hist_gradient_boosting"]


@pytest.mark.parametrize("name", REGRESSORS)
def test_regressors(name, diabetes, exact):
    y = diabetes.y if "poisson" not in name else diabetes.y / 100
    model = REGRESSORS[name]().fit(diabetes.X, y)
    exact(model, diabetes.X, "regression")


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_classifiers(name, dataset, request, exact):
    data = request.getfixturevalue(dataset)
    model = CLASSIFIERS[name]().fit(data.X, data.y)
    exact(model, data.X, "classification")


@pytest.mark.parametrize("name", WITH_MISSING)
def test_missing_values_follow_the_tree(name, diabetes, iris, exact, with_nan):
    X = with_nan(diabetes.X)
    exact(REGRESSORS[name]().fit(X, diabetes.y), X, "regression")
    X = with_nan(iris.X, 0.25)
    exact(CLASSIFIERS[name]().fit(X, iris.y), X, "classification")


@pytest.mark.parametrize("name", ["random_forest", "gradient_boosting"])
def test_nan_rows_of_a_model_fitted_without_nan(name, diabetes, exact, with_nan):
    model = REGRESSORS[name]().fit(diabetes.X, diabetes.y)
    if name == "gradient_boosting":  # sklearn refuses NaN here; rows at thresholds still must match
        exact(model, diabetes.X, "regression")
        return
    exact(model, with_nan(diabetes.X, 0.3, seed=3), "regression", probe=False)


def test_string_labels_and_exponential_loss(breast_cancer, exact):
    labels = np.array(["benign", "malignant"])[breast_cancer.y]
    model = GradientBoostingClassifier(n_estimators=15, loss="exponential", random_state=0)
    exact(model.fit(breast_cancer.X, labels), breast_cancer.X, "classification")
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    exact(forest.fit(breast_cancer.X, labels), breast_cancer.X, "classification")


def test_forest_of_unpruned_trees_at_every_split(diabetes, exact):
    """Deep trees: thousands of thresholds, each probed on both float32 sides."""
    model = RandomForestRegressor(n_estimators=4, random_state=0).fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_thresholds_name_the_split_columns(diabetes):
    model = GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(diabetes.X, diabetes.y)
    found = lookup(model).thresholds(model)  # type: ignore[misc]
    expected: dict[int, set[float]] = {}
    for tree in model.estimators_.ravel():
        t = tree.tree_
        for f, v in zip(t.feature[t.children_left >= 0], t.threshold[t.children_left >= 0], strict=True):
            expected.setdefault(int(f), set()).add(float(v))
    assert {f: set(v.tolist()) for f, v in found.items()} == expected


def test_unsupported_models_are_refused(diabetes, run):
    model = GradientBoostingRegressor(n_estimators=3, init=LinearRegression()).fit(diabetes.X, diabetes.y)
    with pytest.raises(ExportError, match="init=LinearRegression"):
        run(model, diabetes.X, "regression")
    two_outputs = np.c_[diabetes.y, -diabetes.y]
    model = RandomForestRegressor(n_estimators=2, max_depth=2).fit(diabetes.X, two_outputs)
    with pytest.raises(ExportError, match="2 outputs"):
        run(model, diabetes.X, "regression")
    model = DecisionTreeRegressor(max_depth=2).fit(diabetes.X, diabetes.y)
    with pytest.raises(ExportError, match="fitted on 10 features but gets 3"):
        run(model, diabetes.X[:, :3], "regression")
