"""OneVsRestClassifier: members read through decision_function or predict_proba, binary and multiclass;
probabilities within 1e-9 relative of scikit-learn's and identical labels (labels only where the members
have no predict_proba); multilabel models refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tabserve.errors import ExportError
from tabserve.training.convert import FeatureSpec, export_exact
from tests.training.convert.conftest import _check_rows

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)

WITH_PROBABILITIES = {
    # read through decision_function
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1),  # proba
    "bayes": GaussianNB,
}
LABELS_ONLY = {"ridge": RidgeClassifier, "linear_svc": lambda: make_pipeline(StandardScaler(), LinearSVC())}


@pytest.mark.parametrize("member", WITH_PROBABILITIES)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_one_vs_rest_probabilities(dataset, member, request, exact):
    data = request.getfixturevalue(dataset)
    y = np.array(["x", "y", "z"], dtype=object)[data.y]
    model = OneVsRestClassifier(WITH_PROBABILITIES[member]()).fit(data.X, y)
    exact(model, data.X, "classification")


@pytest.mark.parametrize("member", LABELS_ONLY)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_one_vs_rest_labels_and_decision(dataset, member, request, run):
    data = request.getfixturevalue(dataset)
    model = OneVsRestClassifier(LABELS_ONLY[member]()).fit(data.X, data.y)
    rows = _check_rows(model, data.X)
    labels, decision = run(model, rows, "classification")
    np.testing.assert_array_equal(labels, model.predict(rows))
    np.testing.assert_allclose(decision, model.decision_function(rows), rtol=1e-9, atol=0)


def test_multilabel_is_refused(iris):
    Y = np.stack([iris.y == 0, iris.y != 1], axis=1).astype(int)
    model = OneVsRestClassifier(LogisticRegression(max_iter=500)).fit(iris.X, Y)
    with pytest.raises(ExportError, match="multilabel"):
        export_exact(model, [FeatureSpec(f"f{i}") for i in range(4)], "classification")
