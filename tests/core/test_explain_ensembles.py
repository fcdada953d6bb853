"""Issue #16: Bagging of trees and AdaBoostClassifier of trees are explained by exact TreeSHAP; AdaBoostRegressor
and IsolationForest say in one line why they are not.

shap.TreeExplainer refuses both ensembles (InvalidModelError), so the reference is independent of tabserve's
reading of them: the mean of shap.TreeExplainer on each member (exact by linearity), or shap's own TreeSHAP
over the members' trees given as dictionaries (when a member draws a column twice, both copies are one
input feature: one player of the game, not two).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    BaggingClassifier,
    BaggingRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import tabserve
from tabserve.core.explain.artifact import from_bytes
from tabserve.core.explain.explainer import Explainer
from tabserve.core.manifest import Feature
from tabserve.training import import_model
from tabserve.training.explain_data import build_explain
from tabserve.training.explain_trees import ExplainUnsupported, read_estimator

shap = pytest.importorskip("shap")
ROWS = 40


def _data(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        return X, y, "regression"
    if name == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        return X[:, :10], y, "classification"
    X, y = load_iris(return_X_y=True)
    return X, np.array(["setosa", "versicolor", "virginica"])[y], "classification"  # string labels


def _explained(model: Any, X: np.ndarray, task: str) -> Any:
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]
    built = build_explain(model, features, task, pd.DataFrame(X, columns=[f.name for f in features]))  # type: ignore[arg-type]
    assert built.data is not None and built.reason is None, built.reason
    return Explainer(from_bytes(built.data), [f.name for f in features], "X").explain(X[:ROWS])


def _shap_3d(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr[:, :, None] if arr.ndim == 2 else arr  # [rows, columns, outputs]


def _tree_dict(member: Any, columns: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
    t = member.tree_
    split = t.children_left >= 0
    return {"children_left": t.children_left, "children_right": t.children_right,
            "children_default": np.where(t.missing_go_to_left, t.children_left, t.children_right),
            "features": np.where(split, columns[np.where(split, t.feature, 0)], -2),
            "thresholds": t.threshold, "values": values, "node_sample_weight": t.weighted_n_node_samples}


def _shap_of_trees(trees: list[dict[str, np.ndarray]], rows: np.ndarray) -> np.ndarray:
    """shap's TreeSHAP over the given trees, summed: [rows, outputs, features] (rows read as float32, as the
    scikit-learn trees read them)."""
    explainer = shap.TreeExplainer({"trees": trees})
    values = explainer.shap_values(rows.astype(np.float32).astype(np.float64), check_additivity=False)
    return _shap_3d(values).transpose(0, 2, 1)


def _close(got: Any, expected: np.ndarray) -> None:
    np.testing.assert_allclose(got.contributions, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


BAGGING = {
    "regression-diabetes": ("diabetes", {}),
    "regression-diabetes-bootstrap-features": ("diabetes", {"bootstrap_features": True}),
    "iris-strings": ("iris", {}),
    "iris-bootstrap-features": ("iris", {"bootstrap_features": True}),
    "breast-cancer": ("binary", {}),
    "breast-cancer-bootstrap-features": ("binary", {"bootstrap_features": True}),
}


@pytest.mark.parametrize("case", list(BAGGING))
def test_bagging_of_trees_is_explained_exactly(case: str) -> None:
    data, extra = BAGGING[case]
    X, y, task = _data(data)
    kind = DecisionTreeRegressor if task == "regression" else DecisionTreeClassifier
    bagging = BaggingRegressor if task == "regression" else BaggingClassifier
    model = bagging(kind(max_depth=5, random_state=0), n_estimators=12, max_features=0.6, random_state=0,
                    **extra).fit(X, y)
    got = _explained(model, X, task)
    rows = X[:ROWS]
    assert got.space == ("value" if task == "regression" else "probability")
    assert got.outputs == (["prediction"] if task == "regression" else [str(c) for c in model.classes_])

    k = 1 if task == "regression" else len(model.classes_)
    members = list(zip(model.estimators_, model.estimators_features_, strict=True))
    repeated = any(len(set(f)) < len(f) for _, f in members)
    assert repeated == bool(extra)  # bootstrap features draw some column twice in some member
    if not repeated:  # the mean of shap.TreeExplainer on each member, its columns moved to the model's
        expected = np.zeros((ROWS, k, X.shape[1]))
        for member, columns in members:
            values = _shap_3d(shap.TreeExplainer(member).shap_values(rows[:, columns], check_additivity=False))
            classes = np.arange(k) if k == 1 else member.classes_.astype(int)  # a member may miss a class
            for j, column in enumerate(columns):
                expected[:, classes, column] += values[:, j, :] / model.n_estimators
        _close(got, expected)
    # shap's TreeSHAP over the members' trees on the model's columns (copies of a column are one feature)
    trees = []
    for member, columns in members:
        value = member.tree_.value[:, 0, :]
        if k > 1:
            spread = np.zeros((len(value), k))
            spread[:, member.classes_.astype(int)] = value / value.sum(axis=1, keepdims=True)
            value = spread
        trees.append(_tree_dict(member, np.asarray(columns), value / model.n_estimators))
    _close(got, _shap_of_trees(trees, rows))
    # additivity, and the output is scikit-learn's own
    np.testing.assert_allclose(got.contributions.sum(axis=2) + got.expected_value, got.output, rtol=0,
                               atol=1e-12 * max(1.0, np.abs(got.output).max()))
    own = model.predict(rows).reshape(-1, 1) if task == "regression" else model.predict_proba(rows)
    np.testing.assert_allclose(got.output, own, rtol=1e-12, atol=1e-12)


def _votes(model: Any, member: Any, w: float) -> np.ndarray:
    """Per node of ``member``, what SAMME's decision_function adds for a row ending there, from the class
    ``member.predict`` gives (a leaf's row of ``tree_.value``, by scikit-learn)."""
    classes = list(model.classes_)
    k = len(classes)
    leaf_class = member.classes_[np.argmax(member.tree_.value[:, 0, :], axis=1)]
    hit = np.array([[c == leaf for c in classes] for leaf in leaf_class])
    votes = np.where(hit, w, -1 / (k - 1) * w) / model.estimator_weights_.sum()
    return votes[:, 1:2] - votes[:, 0:1] if k == 2 else votes


@pytest.mark.parametrize("depth", [1, 3], ids=["stumps", "depth-3"])
@pytest.mark.parametrize("data", ["binary", "iris"])
def test_adaboost_classifier_of_trees_explains_its_decision_function(depth: int, data: str) -> None:
    X, y, task = _data(data)
    model = AdaBoostClassifier(DecisionTreeClassifier(max_depth=depth), n_estimators=25, random_state=0).fit(X, y)
    got = _explained(model, X, task)
    rows = X[:ROWS]
    assert got.space == "margin"
    assert got.outputs == ([str(model.classes_[1])] if data == "binary" else [str(c) for c in model.classes_])
    trees = [_tree_dict(m, np.arange(X.shape[1]), _votes(model, m, w))
             for m, w in zip(model.estimators_, model.estimator_weights_, strict=False)]
    expected = _shap_of_trees(trees, rows)
    _close(got, expected)
    if depth == 1:  # a stump's SHAP value is its vote minus the cover-weighted mean of its two leaves'
        by_hand = np.zeros_like(expected)
        for member, tree in zip(model.estimators_, trees, strict=True):
            t = member.tree_
            mean = (t.weighted_n_node_samples[1:3, None] * tree["values"][1:3]).sum(axis=0) / t.weighted_n_node_samples[0]
            leaf = member.apply(rows.astype(np.float32))
            by_hand[:, :, t.feature[0]] += tree["values"][leaf] - mean
        _close(got, by_hand)
    np.testing.assert_allclose(got.contributions.sum(axis=2) + got.expected_value, got.output, rtol=0, atol=1e-12)
    decision = np.asarray(model.decision_function(rows)).reshape(ROWS, -1)
    np.testing.assert_allclose(got.output, decision, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model,reason", [
    (AdaBoostRegressor(n_estimators=5, random_state=0),
     ("AdaBoostRegressor predicts a weighted median of its trees, which is not a sum of trees: no additive "
     "explanation")),
    (BaggingRegressor(make_pipeline(StandardScaler(), DecisionTreeRegressor()),
                      n_estimators=3, random_state=0),
     "BaggingRegressor is explained only when its members are single-output scikit-learn trees; it has Pipeline"),
], ids=["adaboost-regressor", "bagging-of-pipelines"])
def test_ensembles_that_are_not_a_sum_of_trees_say_why_in_one_line(model: Any, reason: str) -> None:
    X, y, task = _data("diabetes")
    model.fit(X, y)
    with pytest.raises(ExplainUnsupported) as caught:
        read_estimator(model, task)  # type: ignore[arg-type]
    assert str(caught.value) == reason


def test_a_bagging_bundle_imported_from_a_pickle_explains_over_http(tmp_path: Path) -> None:
    frame = load_diabetes(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    pipeline = make_pipeline(StandardScaler(), BaggingRegressor(DecisionTreeRegressor(max_depth=4), n_estimators=8,
                                                                max_features=0.7, bootstrap_features=True,
                                                                random_state=0)).fit(X, y)
    X.assign(target=y).to_csv(tmp_path / "sample.csv", index=False)
    joblib.dump(pipeline, tmp_path / "model.joblib")
    result = import_model(tmp_path / "model.joblib", tmp_path / "sample.csv", target="target", trust_pickle=True,
                          dest=tmp_path / "bundle")
    served = tabserve.load(result.path)
    assert "explain_unavailable" not in served.bundle.manifest.training
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=served)
    with TestClient(app) as client:
        r = client.post("/api/v1/explain", json={"records": [X.iloc[5].to_dict()]})
    assert r.status_code == 200, r.text
    part = r.json()["explanations"][0]
    assert r.json()["output_space"] == "value"
    assert sorted(part["contributions"]) == sorted(X.columns)
    total = part["expected_value"] + sum(part["contributions"].values()) + part.get("rest", 0.0)
    assert total == pytest.approx(part["output"], abs=1e-9)
    assert part["output"] == pytest.approx(float(pipeline.predict(X.iloc[[5]])[0]), rel=1e-12)


def test_an_adaboost_bundle_explains_its_decision_over_http(tmp_path: Path) -> None:
    X, y, _ = _data("binary")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    labels = pd.Series(np.where(y == 1, "benign", "malignant"))
    model = AdaBoostClassifier(n_estimators=20, random_state=0).fit(frame, labels)
    frame.assign(target=labels).to_csv(tmp_path / "sample.csv", index=False)
    joblib.dump(model, tmp_path / "model.joblib")
    result = import_model(tmp_path / "model.joblib", tmp_path / "sample.csv", target="target", trust_pickle=True,
                          dest=tmp_path / "bundle")
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(result.path))
    rows = frame.iloc[[0, 19]]  # one of each class
    with TestClient(app) as client:
        r = client.post("/api/v1/explain", json={"data": rows.to_numpy().tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output_space"] == "margin"
    decision = model.decision_function(rows)
    assert sorted(model.predict(rows)) == ["benign", "malignant"]
    for row, d, label in zip(body["explanations"], decision, model.predict(rows), strict=True):
        assert row["prediction"] == label
        assert list(row["outputs"]) == ["malignant"]  # classes_[1]: decision > 0 predicts it
        part = row["outputs"]["malignant"]
        total = part["expected_value"] + sum(part["contributions"].values()) + part.get("rest", 0.0)
        assert total == pytest.approx(part["output"], abs=1e-9)
        assert part["output"] == pytest.approx(d, abs=1e-12)
