"""scikit-learn's trees as TreeSHAP tables: single trees and forests, gradient boosting (classic and
HistGradientBoosting), bagging of trees and AdaBoost (SAMME) classifiers of trees."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.core.manifest import Task
from tabserve.training.explain_trees.estimator import Estimator, ExplainUnsupported, TreeTable, as_2d, labels


def forest(model: Any, task: Task) -> Estimator:
    if getattr(model, "n_outputs_", 1) != 1:
        raise ExplainUnsupported(f"{type(model).__name__} with several outputs cannot be explained")
    estimators = getattr(model, "estimators_", [model])
    scale = 1.0 / len(estimators)
    k = len(model.classes_) if task == "classification" else 1
    trees = TreeTable(k)
    for e in estimators:
        t = e.tree_
        value = t.value[:, 0, :k]
        if task == "classification":  # class fractions, as predict_proba (and shap) normalise them
            value = value / np.maximum(value.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value * scale, -1 if k > 1 else 0)
    ens = trees.ensemble(np.zeros(k), model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "probability", labels(model, task, k), lambda m, x: m.predict_proba(x), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: as_2d(m.predict(x)), ens)


def gradient_boosting(model: Any, task: Task) -> Estimator:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    init = model.init_
    if not (init == "zero" or isinstance(init, DummyRegressor | DummyClassifier)):
        raise ExplainUnsupported(f"{type(model).__name__} with init={init!r} cannot be explained")
    base = np.asarray(model._raw_predict_init(np.zeros((1, model.n_features_in_), dtype=np.float32)))[0]
    stages = model.estimators_
    trees = TreeTable(1)
    for stage in stages:
        for k, e in enumerate(stage):
            t = e.tree_
            trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                      t.weighted_n_node_samples, model.learning_rate * t.value[:, 0, 0], k)
    ens = trees.ensemble(base, model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "margin", labels(model, task, stages.shape[1]),
                         lambda m, x: as_2d(m.decision_function(x)), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: as_2d(m.predict(x)), ens)


def hist(model: Any, task: Task) -> Estimator:
    if model.is_categorical_ is not None and np.any(model.is_categorical_):
        raise ExplainUnsupported("HistGradientBoosting with native categorical splits cannot be explained")
    base = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    trees = TreeTable(1)
    for predictors in model._predictors:
        for k, p in enumerate(predictors):
            n = p.nodes
            leaf = n["is_leaf"].astype(bool)
            # left/right are uint32: make them signed before -1 marks a leaf
            trees.add(n["feature_idx"], n["num_threshold"], np.where(leaf, -1, n["left"].astype(np.int64)),
                      np.where(leaf, -1, n["right"].astype(np.int64)), n["missing_go_to_left"], n["count"],
                      n["value"], k)
    ens = trees.ensemble(base, model.n_features_in_)
    if task == "classification":
        return Estimator("tree", "margin", labels(model, task, len(base)),
                         lambda m, x: as_2d(m.decision_function(x)), ens)
    identity = type(model._loss.link).__name__ == "IdentityLink"
    return Estimator("tree", "value" if identity else "margin", ["prediction"],
                     lambda m, x: as_2d(m._raw_predict(x)), ens)


def _leaf_fractions(member: Any, classes: Sequence[Any], who: str) -> np.ndarray:
    """Per node, the member's ``predict_proba`` row for a row ending there, spread to ``classes`` (a member
    fitted on a bootstrap sample can miss a class)."""
    from tabserve.training.convert.members import positions

    value = np.asarray(member.tree_.value[:, 0, :len(member.classes_)], np.float64)
    normalizer = value.sum(axis=1, keepdims=True)
    normalizer[normalizer == 0.0] = 1.0
    out = np.zeros((len(value), len(classes)))
    out[:, positions(member.classes_, classes, who)] = value / normalizer
    return out


def _bare_trees(model: Any, kind: type) -> list[Any]:
    members = list(model.estimators_)
    if not all(isinstance(m, kind) and m.n_outputs_ == 1 for m in members):
        names = ", ".join(sorted({type(m).__name__ for m in members if not isinstance(m, kind)}) or ["several outputs"])
        raise ExplainUnsupported(f"{type(model).__name__} is explained only when its members are single-output "
                                 f"scikit-learn trees; it has {names}")
    return members


def bagging(model: Any, task: Task) -> Estimator:
    """The mean of the members' trees, each tree's splits moved to the columns ``estimators_features_`` name.
    Bootstrap features (a column drawn twice) make one tree split on the same input column under two
    names: TreeSHAP then treats both as the one feature they are."""
    kind = DecisionTreeClassifier if task == "classification" else DecisionTreeRegressor
    members = _bare_trees(model, kind)
    scale = 1.0 / model.n_estimators  # as scikit-learn divides the members' sum
    k = len(model.classes_) if task == "classification" else 1
    trees = TreeTable(k)
    for member, columns in zip(members, model.estimators_features_, strict=True):
        t = member.tree_
        split = t.children_left >= 0
        feature = np.where(split, np.asarray(columns, np.int64)[np.where(split, t.feature, 0)], -1)
        value = _leaf_fractions(member, np.arange(k), type(model).__name__) if k > 1 else t.value[:, 0, :1]
        trees.add(feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value * scale, -1 if k > 1 else 0)
    ens = trees.ensemble(np.zeros(k), model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "probability", labels(model, task, k), lambda m, x: m.predict_proba(x), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: as_2d(m.predict(x)), ens)


def adaboost(model: Any, task: Task) -> Estimator:
    """SAMME's ``decision_function``: member ``i`` adds ``w_i`` to the class its leaf predicts and
    ``-w_i / (K - 1)`` to the others, over the weights' sum; binary, the difference of the two columns."""
    members = _bare_trees(model, DecisionTreeClassifier)
    classes = list(model.classes_)
    k = len(classes)
    if k < 2:
        raise ExplainUnsupported("AdaBoostClassifier fitted on one class cannot be explained")
    total = float(np.sum(model.estimator_weights_))
    trees = TreeTable(1 if k == 2 else k)
    for member, w in zip(members, model.estimator_weights_, strict=False):
        t = member.tree_
        chosen = np.argmax(_leaf_fractions(member, classes, "AdaBoostClassifier"), axis=1)
        votes = np.where(np.arange(k) == chosen[:, None], w, -1 / (k - 1) * w) / total
        value = votes[:, 1] - votes[:, 0] if k == 2 else votes
        trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value, 0 if k == 2 else -1)
    ens = trees.ensemble(np.zeros(1 if k == 2 else k), model.n_features_in_, float32_input=True)
    return Estimator("tree", "margin", labels(model, task, 1 if k == 2 else k),
                     lambda m, x: as_2d(m.decision_function(x)), ens)


def not_additive(model: Any, task: Task) -> Estimator:
    raise ExplainUnsupported(f"{type(model).__name__} predicts a weighted median of its trees, which is not a "
                             "sum of trees: no additive explanation")
