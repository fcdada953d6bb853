"""AdaBoostClassifier (SAMME, stumps and deeper trees, other members) and AdaBoostRegressor (the weighted
median, every loss): probabilities and predictions within 1e-9 relative of scikit-learn's and identical
labels, on data rows, random rows and rows at every member's split thresholds. Tree members are read by one
TreeEnsemble, other members (logistic regression, naive Bayes, ridge) by their own converters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import AdaBoostClassifier, AdaBoostRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)

CLASSIFIERS = {
    "stumps": lambda: AdaBoostClassifier(n_estimators=30, random_state=0),
    "trees": lambda: AdaBoostClassifier(DecisionTreeClassifier(max_depth=3), n_estimators=15,
                                        learning_rate=0.5, random_state=0),
    "logistic": lambda: AdaBoostClassifier(LogisticRegression(max_iter=300), n_estimators=8, random_state=0),
    "bayes": lambda: AdaBoostClassifier(GaussianNB(), n_estimators=8, random_state=0),
}


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_adaboost_classifier(dataset, name, request, exact):
    data = request.getfixturevalue(dataset)
    y = np.array(["first", "second", "third"], dtype=object)[data.y]
    model = CLASSIFIERS[name]().fit(data.X, y)
    exact(model, data.X, "classification")


@pytest.mark.parametrize("loss", ["linear", "square", "exponential"])
@pytest.mark.parametrize("member", ["tree", "ridge"])
def test_adaboost_regressor(member, loss, diabetes, exact):
    base = DecisionTreeRegressor(max_depth=3) if member == "tree" else Ridge(alpha=0.5)
    model = AdaBoostRegressor(base, n_estimators=20, loss=loss, random_state=0).fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_the_weighted_median_with_equal_predictions(exact):
    """Members that agree on many rows (stumps on a step): ties in the sort do not change the median."""
    X = np.repeat(np.arange(6.0), 10).reshape(-1, 1)
    y = (X[:, 0] > 2.5) * 10.0 + X[:, 0] % 2
    model = AdaBoostRegressor(DecisionTreeRegressor(max_depth=1), n_estimators=12, random_state=0).fit(X, y)
    exact(model, X, "regression")

