"""``export_exact`` end to end: the graph's tail (labels, probabilities) and the steps it leaves out for speed
(a scaler folded into the trees, NaN routing where no NaN can come), always with the model's answers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.manifest import Feature
from tabserve.training.adversarial import adversarial_rows
from tabserve.training.convert import FeatureSpec, export_exact


def _export(model, width: int, task: str, *, allow_missing: bool = True):
    features = [FeatureSpec(f"f{i}", allow_missing=allow_missing) for i in range(width)]
    exported = export_exact(model, features, task)  # type: ignore[arg-type]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # bit for bit; more threads may split the tree sums (~1e-16)
    session = ort.InferenceSession(exported.onnx_bytes, options, providers=["CPUExecutionProvider"])
    return session, [n.op_type for n in onnx.load_from_string(exported.onnx_bytes).graph.node]


def _flat(model) -> None:
    """Every leaf of a fitted GradientBoostingClassifier or HistGradientBoostingClassifier set to 0."""
    if isinstance(model, GradientBoostingClassifier):
        for tree in model.estimators_.ravel():
            tree.tree_.value[:] = 0.0
        return
    model._baseline_prediction = np.zeros_like(model._baseline_prediction)
    for predictors in model._predictors:
        for predictor in predictors:
            predictor.nodes["value"] = 0.0


@pytest.mark.parametrize(("name", "leaf", "label"), [
    ("gradient_boosting", 0.0, 1),  # sklearn: class 1 where raw >= 0
    ("gradient_boosting", -1e-300, 0),
    ("gradient_boosting", 1e-300, 1),
    ("hist_gradient_boosting", 0.0, 0),  # sklearn: class 1 where raw > 0
    ("hist_gradient_boosting", 1e-300, 1),
    ("hist_gradient_boosting", -1e-300, 0),
])
def test_binary_labels_follow_the_raw_score_where_probabilities_tie(name, leaf, label, breast_cancer):
    """A raw score of 0 or +-1e-300 gives probabilities [0.5, 0.5] either way; the label still follows
    the sign of the raw score as the model's predict does."""
    X = breast_cancer.X
    if name == "gradient_boosting":
        model = GradientBoostingClassifier(init="zero", n_estimators=3, max_depth=2).fit(X, breast_cancer.y)
        _flat(model)
        model.estimators_[0, 0].tree_.value[:] = leaf / model.learning_rate
    else:
        model = HistGradientBoostingClassifier(max_iter=3).fit(X, breast_cancer.y)
        _flat(model)
        model._predictors[0][0].nodes["value"] = leaf
    assert model.predict(X[:5]).tolist() == [label] * 5
    session, _ = _export(model, X.shape[1], "classification")
    labels, probabilities = session.run(None, {"X": X[:5]})
    assert labels.tolist() == [label] * 5
    assert probabilities.tolist() == [[0.5, 0.5]] * 5


def test_binary_probabilities_are_one_minus_p_bit_for_bit(breast_cancer):
    model = GradientBoostingClassifier(n_estimators=40, learning_rate=1.0, random_state=0)
    model.fit(breast_cancer.X, breast_cancer.y)
    session, ops = _export(model, breast_cancer.X.shape[1], "classification")
    labels, probabilities = session.run(None, {"X": breast_cancer.X})
    assert np.array_equal(probabilities[:, 0], 1.0 - probabilities[:, 1])
    expected = model.predict_proba(breast_cancer.X)
    assert np.max(np.abs(probabilities - expected) / np.maximum(expected, np.finfo(float).tiny)) <= 1e-9
    assert np.array_equal(labels, model.predict(breast_cancer.X))
    assert "Identity" not in ops  # the outputs are named where they are computed


def test_labels_zero_to_k_come_straight_from_argmax_other_labels_are_looked_up(iris):
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(iris.X, iris.y)
    session, ops = _export(model, 4, "classification")
    assert ops[-1] == "ArgMax" and "Gather" not in ops[-2:]
    assert np.array_equal(session.run(["label"], {"X": iris.X})[0], model.predict(iris.X))
    named = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    named.fit(iris.X, np.array(["setosa", "versicolor", "virginica"])[iris.y])
    session, ops = _export(named, 4, "classification")
    assert ops[-1] == "Gather"
    assert session.run(["label"], {"X": iris.X})[0].tolist() == named.predict(iris.X).tolist()


@pytest.mark.parametrize("estimator", [
    RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0),
    GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0),
    HistGradientBoostingClassifier(max_iter=15, random_state=0),
    LGBMClassifier(n_estimators=15, num_leaves=8, random_state=0, n_jobs=1, verbose=-1),
], ids=lambda e: type(e).__name__)
def test_scaler_before_trees_is_folded_into_the_thresholds(estimator, breast_cancer):
    """StandardScaler + trees: no Sub/Div in the graph, the same answers at every threshold (mapped back
    through the scaler, as the parity check probes them) and on the data."""
    X, y = breast_cancer.X, breast_cancer.y
    names = [f"f{i}" for i in range(X.shape[1])]
    model = make_pipeline(StandardScaler(), estimator).fit(pd.DataFrame(X, columns=names), y)
    features = [Feature(name=n, dtype="float64") for n in names]
    frame = pd.DataFrame(X, columns=names)
    probes = adversarial_rows(model, features, frame, list(range(len(frame))), limit=1500).rows
    rows = np.vstack([X, probes.to_numpy(np.float64)])
    session, ops = _export(model, X.shape[1], "classification", allow_missing=False)
    assert "Div" not in ops and "Where" not in ops, ops
    # the ensemble reads X: a forest through a negated copy (each split's NaN side, the batch layout), a
    # booster's classifier alone (no feature can be NaN here)
    forest = isinstance(estimator, RandomForestClassifier)
    assert ops[:3] == ["Neg", "Concat", "TreeEnsemble"] if forest else ops[0] == "TreeEnsemble", ops
    labels, probabilities = session.run(None, {"X": rows})
    expected = model.predict_proba(pd.DataFrame(rows, columns=names))
    assert np.max(np.abs(probabilities - expected) / np.maximum(expected, np.finfo(float).tiny)) <= 1e-9
    assert np.array_equal(labels, model.predict(pd.DataFrame(rows, columns=names)))


def test_binary_forest_averages_one_class_in_one_pass(breast_cancer):
    """A binary forest with mixed leaves sums the class-1 fractions in a single-target ensemble (no table of
    leaf vectors) and gives class 0 as ``1 - p1``: within 1e-9 of sklearn's own class-0 mean, labels
    identical."""
    X, y = breast_cancer.X, breast_cancer.y
    model = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=0).fit(X, y)
    session, ops = _export(model, X.shape[1], "classification", allow_missing=False)
    assert ops[-3:] == ["Sub", "Abs", "ArgMax"] and "Gather" not in ops, ops
    rows = np.vstack([X, X * 1.01, X * 0.99])
    labels, probabilities = session.run(None, {"X": rows})
    expected = model.predict_proba(rows)
    assert np.max(np.abs(probabilities - expected) / np.maximum(expected, np.finfo(float).tiny)) <= 1e-9
    assert np.array_equal(labels, model.predict(rows))


@pytest.mark.parametrize("jobs", [1, 2])
def test_fully_grown_forest_counts_votes_in_one_pass(iris, jobs):
    """Fully grown trees (scikit-learn's default, and ``tabserve train``'s) end in pure leaves: each leaf adds
    1 to its class and the ensemble averages the counts, so the probabilities are sklearn's bit for bit,
    even for a forest fitted with several jobs (whole-number sums do not depend on the order)."""
    X, y = iris.X, iris.y
    model = RandomForestClassifier(n_estimators=25, random_state=0, n_jobs=jobs).fit(X, y)
    session, ops = _export(model, X.shape[1], "classification", allow_missing=False)
    assert ops[-2:] == ["TreeEnsemble", "ArgMax"], ops
    rows = np.vstack([X, X * 1.05, X * 0.95])
    labels, probabilities = session.run(None, {"X": rows})
    assert np.array_equal(probabilities, model.predict_proba(rows))
    assert np.array_equal(labels, model.predict(rows))


def test_binary_forest_with_large_mixed_leaves_keeps_both_means():
    """Stumps over 20,000 rows with a few odd ones out: a leaf's class-0 fraction can be ~1/8,000, where the
    worst-case bound on ``1 - p1`` against sklearn's own class-0 mean passes 1e-9 relative (2e-8; this
    forest happens to measure 9e-13, but the bound cannot know). Such a forest keeps the table of leaf
    vectors, whose both means are sklearn's bit for bit."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 3))
    y = (X[:, 0] > -3.3).astype(int)  # about 10 rows of class 0
    model = RandomForestClassifier(n_estimators=100, max_depth=1, random_state=0).fit(X, y)
    session, ops = _export(model, X.shape[1], "classification", allow_missing=False)
    assert "Gather" in ops and "ReduceMean" in ops, ops
    labels, probabilities = session.run(None, {"X": X})
    assert np.array_equal(probabilities, model.predict_proba(X))
    assert np.array_equal(labels, model.predict(X))


def test_regressors_keep_every_nan_side_so_the_populated_child_is_the_fall_through(diabetes, with_nan):
    """A regressor's splits (and a forest classifier's) keep the model's own NaN side even where the feature cannot be NaN (the server
    refuses it): scikit-learn sends NaN to the child with more training samples, and the negated copy that
    reads makes that child onnxruntime's fall-through, which scores large batches faster. Both graphs
    then route NaN exactly as the model (boosters' classifiers drop the copy: see the test above)."""
    X = diabetes.X
    model = RandomForestRegressor(n_estimators=5, max_depth=6, random_state=0).fit(with_nan(X), diabetes.y)
    strict, strict_ops = _export(model, X.shape[1], "regression", allow_missing=False)
    routed, routed_ops = _export(model, X.shape[1], "regression", allow_missing=True)
    assert "Concat" in strict_ops and "Concat" in routed_ops
    assert np.array_equal(strict.run(None, {"X": X})[0], model.predict(X))
    missing = with_nan(X, 0.3, seed=1)
    assert np.array_equal(strict.run(None, {"X": missing})[0], model.predict(missing))
    assert np.array_equal(routed.run(None, {"X": missing})[0], model.predict(missing))
