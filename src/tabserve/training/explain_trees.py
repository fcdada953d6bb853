"""A fitted estimator's trees (or coefficients) as the plain arrays of ``core.explain``, with what they explain.

Output spaces, as ``shap.TreeExplainer`` explains each model by default:
- forests, single trees and bagging of trees: the prediction (regression) or each class's probability
  (classifier);
- AdaBoostClassifier (SAMME) of trees: ``decision_function`` (one score for two classes), a sum of trees
  (shap.TreeExplainer reads neither Bagging nor AdaBoost; the explanation is the same TreeSHAP);
- gradient boosting (scikit-learn, HistGradientBoosting, LightGBM, XGBoost): the raw margin -- the
  prediction for a squared-error regressor, the log-odds of the positive class for a binary classifier,
  one softmax logit per class for a multiclass one, log(mean) for a Poisson/Gamma HistGradientBoosting;
- linear models: ``X @ coef_ + intercept_`` (the prediction, or the classifier's decision function).
Covers: scikit-learn ``weighted_n_node_samples``, HistGradientBoosting ``count``, LightGBM
``internal_count``/``leaf_count``, XGBoost ``sum_hessian``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    BaggingClassifier,
    BaggingRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
from sklearn.linear_model._glm.glm import _GeneralizedLinearRegressor
from sklearn.linear_model._stochastic_gradient import BaseSGDRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.core.explain.artifact import Kind, Space
from tabserve.core.explain.ensemble import TreeEnsemble
from tabserve.core.manifest import Task
from tabserve.errors import ExportError
from tabserve.training.convert import registry as convert_registry

Raw = Callable[[Any, np.ndarray], np.ndarray]  # (final estimator, its columns) -> [rows, outputs]
LIGHTGBM_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
XGBOOST_IDENTITY = ("reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror")


class ExplainUnsupported(ExportError):
    """The model can be served but not explained (its type, or a step, is outside what TreeSHAP covers)."""


@dataclass(frozen=True, eq=False)
class Estimator:
    kind: Kind
    space: Space
    outputs: list[str]
    raw: Raw
    trees: TreeEnsemble | None = None
    linear: tuple[np.ndarray, np.ndarray] | None = None  # coef [K, C], intercept [K]


class _Trees:
    """Collects trees (local child indices) into one ensemble with global node indices."""

    def __init__(self, width: int) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.outputs: list[int] = []
        self.count = 0
        self.width = width

    def add(self, feature: Any, threshold: Any, left: Any, right: Any, missing_left: Any, cover: Any, value: Any,
            output: int, zero_missing: Any = None) -> None:
        left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
        n = len(left)
        leaf = left < 0

        def shift(a: np.ndarray) -> np.ndarray:
            return np.where(leaf, -1, a + self.count)

        value = np.asarray(value, dtype=np.float64).reshape(n, -1)
        self.parts.append((np.where(leaf, -1, np.asarray(feature)), np.asarray(threshold, dtype=np.float64),
                           shift(left), shift(right), np.asarray(missing_left, dtype=bool),
                           np.zeros(n, bool) if zero_missing is None else np.asarray(zero_missing, dtype=bool),
                           np.asarray(cover, dtype=np.float64), value))
        self.outputs.append(output)
        self.count += n

    def ensemble(self, base: Sequence[float], n_columns: int, **flags: bool) -> TreeEnsemble:
        cat = [np.concatenate([p[i] for p in self.parts]) for i in range(8)]
        roots = np.cumsum([0] + [len(p[0]) for p in self.parts[:-1]])
        return TreeEnsemble(cat[0].astype(np.int32), cat[1], cat[2].astype(np.int32), cat[3].astype(np.int32),
                            cat[4], cat[5], cat[6], cat[7], roots.astype(np.int64),
                            np.array(self.outputs, dtype=np.int32), np.asarray(base, dtype=np.float64),
                            n_columns, **flags)


def read_estimator(model: Any, task: Task) -> Estimator:
    from tabserve.training.native import NativeRegressor

    inner = model.booster if isinstance(model, NativeRegressor) else model
    library = convert_registry.library(inner)
    if library == "lightgbm":
        return _lightgbm(model, task)
    if library == "xgboost":
        return _xgboost(model, task)
    for kinds, reader in _READERS:
        if isinstance(model, kinds):
            return reader(model, task)
    raise ExplainUnsupported(f"{type(model).__name__} has no TreeSHAP or linear explainer in tabserve: it is "
                             f"{family(model)}; explained are {EXPLAINED}")


EXPLAINED = ("decision trees, random and extra-trees forests, bagging of trees, AdaBoost classifiers of trees, "
             "gradient boosting (scikit-learn, HistGradientBoosting, LightGBM, XGBoost, including boosted forests) "
             "and linear models (linear and logistic regression, linear SVMs, GLMs)")
# the family of an estimator tabserve serves but does not explain, by scikit-learn module or class name
_FAMILIES = {"neural_network": "a neural network", "naive_bayes": "a naive Bayes model", "svm": "a kernel SVM",
             "neighbors": "a nearest-neighbours model", "discriminant_analysis": "a discriminant analysis",
             "gaussian_process": "a Gaussian process", "kernel_ridge": "a kernel ridge regression",
             "isotonic": "an isotonic regression", "calibration": "a calibrated classifier",
             "multiclass": "a one-vs-rest/one-vs-one wrapper", "compose": "a transformed-target regressor",
             "Voting": "a voting ensemble", "Stacking": "a stacking ensemble", "Bagging": "a bagging ensemble",
             "AdaBoost": "an AdaBoost ensemble", "IsolationForest": "an isolation forest"}


def family(model: Any) -> str:
    """What kind of model ``model`` is, in words, for the one-line reason it cannot be explained."""
    name = type(model).__name__
    for prefix in ("Voting", "Stacking", "Bagging", "AdaBoost", "IsolationForest"):
        if name.startswith(prefix):
            return _FAMILIES[prefix]
    module = type(model).__module__.split(".")
    if module[0] == "sklearn":
        found = next((_FAMILIES[part] for part in module[1:] if part in _FAMILIES), None)
        return found or f"a model of scikit-learn's {'.'.join(p for p in module[1:] if not p.startswith('_'))}"
    return f"a {module[0]} model"


def _labels(model: Any, task: Task, k: int) -> list[str]:
    if task == "regression":
        return ["prediction"]
    classes = [str(c) for c in getattr(model, "classes_", range(max(k, 2)))]
    return classes[1:] if k == 1 else classes


def _as_2d(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(len(arr), -1)


# scikit-learn ------------------------------------------------------------------------------------------------


def _forest(model: Any, task: Task) -> Estimator:
    if getattr(model, "n_outputs_", 1) != 1:
        raise ExplainUnsupported(f"{type(model).__name__} with several outputs cannot be explained")
    estimators = getattr(model, "estimators_", [model])
    scale = 1.0 / len(estimators)
    k = len(model.classes_) if task == "classification" else 1
    trees = _Trees(k)
    for e in estimators:
        t = e.tree_
        value = t.value[:, 0, :k]
        if task == "classification":  # class fractions, as predict_proba (and shap) normalise them
            value = value / np.maximum(value.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value * scale, -1 if k > 1 else 0)
    ens = trees.ensemble(np.zeros(k), model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "probability", _labels(model, task, k), lambda m, x: m.predict_proba(x), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: _as_2d(m.predict(x)), ens)


def _gradient_boosting(model: Any, task: Task) -> Estimator:
    from sklearn.dummy import DummyClassifier, DummyRegressor

    init = model.init_
    if not (init == "zero" or isinstance(init, DummyRegressor | DummyClassifier)):
        raise ExplainUnsupported(f"{type(model).__name__} with init={init!r} cannot be explained")
    base = np.asarray(model._raw_predict_init(np.zeros((1, model.n_features_in_), dtype=np.float32)))[0]
    stages = model.estimators_
    trees = _Trees(1)
    for stage in stages:
        for k, e in enumerate(stage):
            t = e.tree_
            trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                      t.weighted_n_node_samples, model.learning_rate * t.value[:, 0, 0], k)
    ens = trees.ensemble(base, model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "margin", _labels(model, task, stages.shape[1]),
                         lambda m, x: _as_2d(m.decision_function(x)), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: _as_2d(m.predict(x)), ens)


def _hist(model: Any, task: Task) -> Estimator:
    if model.is_categorical_ is not None and np.any(model.is_categorical_):
        raise ExplainUnsupported("HistGradientBoosting with native categorical splits cannot be explained")
    base = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    trees = _Trees(1)
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
        return Estimator("tree", "margin", _labels(model, task, len(base)),
                         lambda m, x: _as_2d(m.decision_function(x)), ens)
    identity = type(model._loss.link).__name__ == "IdentityLink"
    return Estimator("tree", "value" if identity else "margin", ["prediction"],
                     lambda m, x: _as_2d(m._raw_predict(x)), ens)


def _linear(model: Any, task: Task) -> Estimator:
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64), (coef.shape[0],)).copy()
    if task == "classification":
        return Estimator("linear", "margin", _labels(model, task, coef.shape[0]),
                         lambda m, x: _as_2d(m.decision_function(x)), linear=(coef, intercept))
    if coef.shape[0] != 1:
        raise ExplainUnsupported(f"{type(model).__name__} with several outputs cannot be explained")
    return Estimator("linear", "value", ["prediction"], lambda m, x: _as_2d(m.predict(x)), linear=(coef, intercept))


def _glm(model: Any) -> Estimator:
    """Poisson, Gamma, Tweedie: contributions to the linear predictor (the log of a log link's prediction)."""
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.array([float(model.intercept_)])
    identity = type(model._base_loss.link).__name__ == "IdentityLink"
    return Estimator("linear", "value" if identity else "margin", ["prediction"],
                     lambda m, x: _as_2d(m._linear_predictor(x)), linear=(coef, intercept))


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


def _bagging(model: Any, task: Task) -> Estimator:
    """The mean of the members' trees, each tree's splits moved to the columns ``estimators_features_`` name.
    Bootstrap features (a column drawn twice) make one tree split on the same input column under two
    names: TreeSHAP then treats both as the one feature they are."""
    kind = DecisionTreeClassifier if task == "classification" else DecisionTreeRegressor
    members = _bare_trees(model, kind)
    scale = 1.0 / model.n_estimators  # as scikit-learn divides the members' sum
    k = len(model.classes_) if task == "classification" else 1
    trees = _Trees(k)
    for member, columns in zip(members, model.estimators_features_, strict=True):
        t = member.tree_
        split = t.children_left >= 0
        feature = np.where(split, np.asarray(columns, np.int64)[np.where(split, t.feature, 0)], -1)
        value = _leaf_fractions(member, np.arange(k), type(model).__name__) if k > 1 else t.value[:, 0, :1]
        trees.add(feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value * scale, -1 if k > 1 else 0)
    ens = trees.ensemble(np.zeros(k), model.n_features_in_, float32_input=True)
    if task == "classification":
        return Estimator("tree", "probability", _labels(model, task, k), lambda m, x: m.predict_proba(x), ens)
    return Estimator("tree", "value", ["prediction"], lambda m, x: _as_2d(m.predict(x)), ens)


def _adaboost(model: Any, task: Task) -> Estimator:
    """SAMME's ``decision_function``: member ``i`` adds ``w_i`` to the class its leaf predicts and
    ``-w_i / (K - 1)`` to the others, over the weights' sum; binary, the difference of the two columns."""
    members = _bare_trees(model, DecisionTreeClassifier)
    classes = list(model.classes_)
    k = len(classes)
    if k < 2:
        raise ExplainUnsupported("AdaBoostClassifier fitted on one class cannot be explained")
    total = float(np.sum(model.estimator_weights_))
    trees = _Trees(1 if k == 2 else k)
    for member, w in zip(members, model.estimator_weights_, strict=False):
        t = member.tree_
        chosen = np.argmax(_leaf_fractions(member, classes, "AdaBoostClassifier"), axis=1)
        votes = np.where(np.arange(k) == chosen[:, None], w, -1 / (k - 1) * w) / total
        value = votes[:, 1] - votes[:, 0] if k == 2 else votes
        trees.add(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, value, 0 if k == 2 else -1)
    ens = trees.ensemble(np.zeros(1 if k == 2 else k), model.n_features_in_, float32_input=True)
    return Estimator("tree", "margin", _labels(model, task, 1 if k == 2 else k),
                     lambda m, x: _as_2d(m.decision_function(x)), ens)


def _isolation(model: Any, task: Task) -> Estimator:
    """IsolationForest in path-length space: its trees' leaf depths (``depth + c(n_node_samples) - 1``, as
    ``score_samples`` adds them) over the number of trees, so that the contributions add up to the row's mean
    path length. The score, ``-2 ** -(mean path length / c(max_samples))``, falls as that length grows: a
    feature whose contribution shortens the path makes the row more abnormal. The score itself is not a sum
    over features and is not explained."""
    scale = 1.0 / len(model.estimators_)
    trees = _Trees(1)
    members = zip(model.estimators_, model.estimators_features_, strict=True)
    for i, (member, columns) in enumerate(members):
        t = member.tree_
        split = t.children_left >= 0
        feature = np.where(split, np.asarray(columns, np.int64)[np.where(split, t.feature, 0)], -1)
        depth = model._decision_path_lengths[i] + model._average_path_length_per_tree[i] - 1.0
        trees.add(feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, depth * scale, 0)
    ens = trees.ensemble(np.zeros(1), model.n_features_in_, float32_input=True)
    return Estimator("tree", "path_length", ["path_length"], _mean_path_length, ens)


def _mean_path_length(model: Any, x: Any) -> np.ndarray:
    """What ``score_samples`` computes before its last step: the leaf depths, tree by tree, over the trees."""
    x = np.asarray(x, dtype=np.float32)
    total = np.zeros(len(x))
    for i, (tree, columns) in enumerate(zip(model.estimators_, model.estimators_features_, strict=True)):
        leaves = tree.apply(x[:, columns])
        total += model._decision_path_lengths[i][leaves] + model._average_path_length_per_tree[i][leaves] - 1.0
    return (total / len(model.estimators_)).reshape(-1, 1)


def _not_additive(model: Any, task: Task) -> Estimator:
    raise ExplainUnsupported(f"{type(model).__name__} predicts a weighted median of its trees, which is not a "
                             "sum of trees: no additive explanation")


_READERS: list[tuple[tuple[type, ...], Callable[[Any, Task], Estimator]]] = [
    ((DecisionTreeRegressor, DecisionTreeClassifier, RandomForestRegressor, RandomForestClassifier,
      ExtraTreesRegressor, ExtraTreesClassifier), _forest),
    ((GradientBoostingRegressor, GradientBoostingClassifier), _gradient_boosting),
    ((HistGradientBoostingRegressor, HistGradientBoostingClassifier), _hist),
    ((LinearModel, LogisticRegression, LinearClassifierMixin, BaseSGDRegressor), _linear),
    ((_GeneralizedLinearRegressor,), lambda m, task: _glm(m)),
    ((BaggingRegressor, BaggingClassifier), _bagging),
    ((AdaBoostClassifier,), _adaboost),
    ((AdaBoostRegressor,), _not_additive),
    ((IsolationForest,), _isolation),
]


# LightGBM ----------------------------------------------------------------------------------------------------


def _lightgbm(model: Any, task: Task) -> Estimator:
    booster = getattr(model, "booster_", None) or model
    dump = booster.dump_model()
    if dump.get("average_output"):
        raise ExplainUnsupported("LightGBM boosting='rf' cannot be explained")
    objective, *params = str(dump["objective"]).split()
    k = int(dump["num_tree_per_iteration"])
    # any objective: the raw score is the trees' sum whatever the link (checked against raw_score below)
    trees = _Trees(1)
    for i, info in enumerate(dump["tree_info"]):
        feature, threshold, left, right, missing_left, cover, value, zero = _lightgbm_tree(info["tree_structure"])
        trees.add(feature, threshold, left, right, missing_left, cover, value, i % k, zero)
    ens = trees.ensemble(np.zeros(k), int(dump["max_feature_idx"]) + 1, snap_zero=True)

    def raw(m: Any, x: np.ndarray) -> np.ndarray:
        return _as_2d(booster.predict(x, raw_score=True))

    space: Space = "value" if objective in LIGHTGBM_IDENTITY and not params else "margin"
    return Estimator("tree", space, _labels(model, task, k), raw, ens)


def _lightgbm_tree(root: dict[str, Any]) -> tuple[list[Any], ...]:
    feature, threshold, left, right, missing_left, cover, value, zero = ([] for _ in range(8))
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, True)]
    while stack:
        node, parent, is_left = stack.pop()
        i = len(left)
        if parent >= 0:
            (left if is_left else right)[parent] = i
        left.append(-1), right.append(-1)
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ExplainUnsupported("LightGBM linear trees cannot be explained")
            feature.append(0), threshold.append(0.0), missing_left.append(False), zero.append(False)
            cover.append(float(node.get("leaf_count", 0))), value.append(float(node["leaf_value"]))
            continue
        if node["decision_type"] != "<=":
            raise ExplainUnsupported("LightGBM categorical splits cannot be explained")
        t, kind = float(node["threshold"]), node["missing_type"]
        t = np.inf if t >= 1e300 else -np.inf if t <= -1e300 else t  # dump_model clamps infinities
        feature.append(int(node["split_feature"])), threshold.append(t), value.append(0.0)
        cover.append(float(node.get("internal_count", 0))), zero.append(kind == "Zero")
        missing_left.append(0.0 <= t if kind == "None" else bool(node["default_left"]))
        stack += [(node["right_child"], i, False), (node["left_child"], i, True)]
    return feature, threshold, left, right, missing_left, cover, value, zero


# XGBoost -----------------------------------------------------------------------------------------------------


def _xgboost(model: Any, task: Task) -> Estimator:
    from tabserve.training.convert.boosters import xgboost_base_margin, xgboost_json
    from tabserve.training.convert.trees import float32_below

    booster, learner, used = xgboost_json(model)
    objective = learner["objective"]["name"]
    # any objective: the margin is the trees' sum whatever the link (checked against output_margin below)
    model_json = learner["gradient_booster"]["model"]
    base = xgboost_base_margin(booster, learner)
    trees = _Trees(1)
    for j in used:
        t = model_json["trees"][j]
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise ExplainUnsupported("XGBoost categorical splits cannot be explained")
        left = np.array(t["left_children"])
        condition = np.array(t["split_conditions"], dtype=np.float32)
        threshold = np.where(left < 0, 0.0, float32_below(condition))
        # XGBoost holds covers as float32: the JSON's shortest decimal read as float64 is a slightly other
        # number (1e-8 relative), which moves a classifier's SHAP values (non-integer hessians) by as much
        cover = np.array(t["sum_hessian"], dtype=np.float32).astype(np.float64)
        trees.add(t["split_indices"], threshold, left, t["right_children"], np.array(t["default_left"], dtype=bool),
                  cover, condition.astype(np.float64), int(model_json["tree_info"][j]))
    n_features = int(learner["learner_model_param"]["num_feature"])
    ens = trees.ensemble(base, n_features, float32_input=True)
    # predict counts boosting rounds, each of num_parallel_tree trees per class: the round that ends at the
    # last tree used (not the number of class-0 trees, which is num_parallel_tree times more)
    rounds = list(model_json["iteration_indptr"]).index(len(used))

    def raw(m: Any, x: np.ndarray) -> np.ndarray:
        import xgboost

        margin = booster.predict(xgboost.DMatrix(x), output_margin=True, validate_features=False,
                                 iteration_range=(0, rounds))
        return _as_2d(margin)

    space: Space = "value" if objective in XGBOOST_IDENTITY else "margin"
    return Estimator("tree", space, _labels(model, task, len(base)), raw, ens)

