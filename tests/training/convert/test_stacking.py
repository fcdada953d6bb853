"""StackingClassifier (every stack_method, passthrough) and StackingRegressor: the export's probabilities and
predictions within 1e-9 relative of scikit-learn's and identical labels, on data rows, random rows and rows
at every member's split thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
    StackingClassifier,
    StackingRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tests.training.convert.conftest import _check_rows

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


def _members(method: str) -> list:
    if method == "decision_function":
        return [("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
                ("ridge", RidgeClassifier()),
                ("svc", make_pipeline(StandardScaler(), LinearSVC(random_state=0)))]
    members = [("logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))),
               ("forest", RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)),
               ("boosting", GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=0))]
    if method in ("auto", "predict"):  # members without predict_proba: decision_function, or the label
        members.append(("svc", make_pipeline(StandardScaler(), LinearSVC(random_state=0))))
    if method in ("auto", "predict_proba", "predict"):
        members.append(("bayes", GaussianNB()))
    return members


@pytest.mark.parametrize("passthrough", [False, True], ids=["stacked", "passthrough"])
@pytest.mark.parametrize("method", ["auto", "predict_proba", "decision_function", "predict"])
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_stacking_classifier(dataset, method, passthrough, request, exact):
    data = request.getfixturevalue(dataset)
    y = np.array(["no", "yes", "maybe"], dtype=object)[data.y]
    final = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)) if passthrough else None
    model = StackingClassifier(_members(method), final_estimator=final, stack_method=method,
                               passthrough=passthrough, cv=3).fit(data.X, y)
    exact(model, data.X, "classification")


def test_a_final_estimator_without_probabilities_gives_labels_only(iris, run):
    model = StackingClassifier(_members("auto"), final_estimator=RidgeClassifier(), cv=3).fit(iris.X, iris.y)
    rows = _check_rows(model, iris.X)
    outputs = run(model, rows, "classification")
    assert len(outputs) == 2  # the label and the final estimator's decision
    np.testing.assert_array_equal(outputs[0], model.predict(rows))
    np.testing.assert_allclose(outputs[1], model.decision_function(rows), rtol=1e-9, atol=0)


@pytest.mark.parametrize("final", ["ridge", "tree"])
@pytest.mark.parametrize("passthrough", [False, True], ids=["stacked", "passthrough"])
def test_stacking_regressor(final, passthrough, diabetes, exact):
    members = [("linear", LinearRegression()),
               ("forest", RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0, n_jobs=1)),
               ("mlp", make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=200,
                                                                    random_state=0)))]
    final_estimator = Ridge() if final == "ridge" else DecisionTreeRegressor(max_depth=4, random_state=0)
    model = StackingRegressor(members, final_estimator=final_estimator, passthrough=passthrough, cv=3)
    model.fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_a_tree_as_final_classifier(breast_cancer, exact):
    model = StackingClassifier(_members("auto"), final_estimator=DecisionTreeClassifier(max_depth=3), cv=3)
    model.fit(breast_cancer.X, breast_cancer.y)
    exact(model, breast_cancer.X, "classification")


@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_a_kernel_svm_stacks_its_decision_function(dataset, request, exact):
    """SVC without probabilities: 'auto' picks decision_function, which the SVM converter gives as scores."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    data = request.getfixturevalue(dataset)
    members = [("svc", make_pipeline(StandardScaler(), SVC())),
               ("knn", make_pipeline(StandardScaler(), KNeighborsClassifier(algorithm="kd_tree")))]
    model = StackingClassifier(members, cv=3).fit(data.X, data.y)
    assert model.stack_method_ == ["decision_function", "predict_proba"]
    exact(model, data.X, "classification")
