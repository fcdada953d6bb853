"""VotingClassifier (soft and hard, with weights) and VotingRegressor: the export's probabilities and
predictions within 1e-9 relative of scikit-learn's and identical labels, on data rows, random rows and
rows at every member's split thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.errors import ExportError
from tests.training.convert.conftest import _check_rows

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


def _classifiers(with_ridge: bool = False) -> list:
    members = [("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
               ("forest", RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)),
               ("tree", DecisionTreeClassifier(max_depth=3, random_state=0)),
               ("bayes", GaussianNB())]
    return members + ([("ridge", RidgeClassifier())] if with_ridge else [])


@pytest.mark.parametrize("weights", [None, [1, 2, 0.5, 3]], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_soft_voting(dataset, weights, request, exact):
    data = request.getfixturevalue(dataset)
    y = np.array(["setosa", "versicolor", "virginica", "x"], dtype=object)[data.y]  # string labels
    model = VotingClassifier(_classifiers(), voting="soft", weights=weights).fit(data.X, y)
    exact(model, data.X, "classification")


@pytest.mark.parametrize("weights", [None, [1, 1, 1, 1, 1], [2, 1, 1, 0.5, 1]],
                         ids=["unweighted", "ones", "weighted"])
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_hard_voting_labels(dataset, weights, request, run):
    """Hard voting serves labels only; ties (two members each side) go to the first class, as bincount's
    argmax."""
    data = request.getfixturevalue(dataset)
    model = VotingClassifier(_classifiers(with_ridge=True), voting="hard", weights=weights)
    model.fit(data.X, data.y)
    rows = _check_rows(model, data.X)
    outputs = run(model, rows, "classification")
    assert len(outputs) == 1  # no probabilities
    np.testing.assert_array_equal(outputs[0], model.predict(rows))


def test_hard_voting_ties_go_to_the_first_class(run):
    """Two members that disagree on some rows: one vote each, and bincount's argmax picks the first class."""
    X = np.arange(8.0).reshape(-1, 1)
    y = np.array(["b", "a", "b", "a", "a", "b", "a", "b"], dtype=object)
    members = [("low", DecisionTreeClassifier(max_depth=1, random_state=0)), ("linear", LogisticRegression())]
    model = VotingClassifier(members, voting="hard").fit(X, y)
    rows = np.linspace(-5.0, 12.0, 69).reshape(-1, 1)
    votes = np.array([m.predict(rows) for m in model.estimators_])
    assert np.any(votes[0] != votes[1])  # some rows are ties
    np.testing.assert_array_equal(run(model, rows, "classification")[0], model.predict(rows))


@pytest.mark.parametrize("weights", [None, [3, 1, 0.25]], ids=["unweighted", "weighted"])
def test_voting_regressor(weights, diabetes, exact):
    members = [("linear", LinearRegression()),
               ("forest", RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0, n_jobs=1)),
               ("boosting", GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0))]
    model = VotingRegressor(members, weights=weights).fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_dropped_members_are_left_out(diabetes, exact):
    members = [("linear", LinearRegression()), ("dropped", "drop"),
               ("tree", DecisionTreeRegressor(max_depth=4))]
    model = VotingRegressor(members, weights=[1, 5, 2]).fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_soft_voting_needs_probabilities_from_every_member(iris):
    # scikit-learn itself refuses soft voting over a member without predict_proba at predict time
    from tabserve.training.convert import FeatureSpec, export_exact

    model = VotingClassifier(_classifiers(with_ridge=True), voting="hard").fit(iris.X, iris.y)
    model.voting = "soft"
    with pytest.raises(ExportError, match="RidgeClassifier has no predict_proba"):
        export_exact(model, [FeatureSpec(f"f{i}") for i in range(4)], "classification")
