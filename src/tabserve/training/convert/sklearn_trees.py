"""scikit-learn's trees and tree ensembles, reproduced bit for bit (up to ``links``' exp).

- DecisionTree, RandomForest, ExtraTrees, GradientBoosting round X to float32 and compare it with
  float64 thresholds (``X[i, f] <= threshold``); the graph compares the double input with thresholds
  moved so that the result is the same (``trees.float32_leq``). NaN follows ``missing_go_to_left``
  (set for every split, also when the model saw no NaN). Forests add the trees' predictions
  (classifiers: the leaf class fractions in ``tree_.value``) in tree order and divide by the number
  of trees, as ``_accumulate_prediction`` does with ``n_jobs=1``; with more jobs sklearn adds in the
  order its threads finish, which can move the last bit. Regressors and boosters are summed by the
  ensemble itself (``trees.tree_sums``: in order on one thread, ~1e-16 otherwise). Labels: argmax of the averaged fractions.
  A binary forest averages the class-1 fractions only (one value per leaf, one pass over the trees) and
  gives class 0 as ``1 - p1`` (``_complement_error`` bounds what that costs against sklearn's own class-0
  mean). A multiclass forest whose leaves are all pure (fully grown trees) counts votes in one pass
  (``trees.tree_votes``); other forests read each tree's leaf vector from a table and average them.
- GradientBoosting: ``raw = init + lr * v_0 + lr * v_1 + ...`` per class (``predict_stages``), the
  init a constant (a Dummy estimator or 'zero', computed by sklearn itself); binary label
  ``raw >= 0``; loss log_loss (sigmoid or softmax) or exponential (sigmoid of ``2 * raw``).
- HistGradientBoosting compares the float64 X with float64 ``num_threshold`` (no cast), NaN by
  ``missing_go_to_left``; ``raw = baseline + v_0 + v_1 + ...``; binary label ``raw > 0``; identity
  or log link for regression. Native categorical features (``categorical_features``, also "from_dtype"
  on pandas ``category`` columns): scikit-learn's OrdinalEncoder gives each value its position among
  the sorted categories seen in fit (an unseen one or NaN: NaN), and a split tests the code against a
  bitset; the graph looks text up with ``categorical.categorical_input`` and tests with ``BRANCH_MEMBER``.

Thresholds for adversarial rows are the split values, per input column. For the float32-rounding
models the inputs that matter are the float32 values around ``float32(t)`` (and the double midpoints
between them); HistGradientBoosting compares doubles, so ``t`` and the doubles next to it matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
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
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.categorical import (
    CategoricalColumn,
    categorical_input,
    member_probes,
    on_columns,
)
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.links import binary_from_negated, binary_probabilities, softmax
from tabserve.training.convert.registry import ClassScores, Prediction, register, single_tensor
from tabserve.training.convert.trees import (
    Tree,
    constant_tree,
    mean_over_trees,
    reshape,
    tree_sums,
    tree_vectors,
    tree_votes,
)


def _split_thresholds(trees: Iterable[Tree]) -> dict[int, np.ndarray]:
    by_feature: dict[int, list[np.ndarray]] = {}
    for tree in trees:
        inner = tree.splits[~tree.categorical[tree.splits]]
        features = np.asarray(tree.feature)[inner]
        thresholds = np.asarray(tree.threshold, dtype=np.float64)[inner]
        for f in np.unique(features):
            by_feature.setdefault(int(f), []).append(thresholds[features == f])
    return {f: np.unique(np.concatenate(ts)) for f, ts in sorted(by_feature.items())}


def _tree(estimator: Any, values: np.ndarray | None = None) -> Tree:
    t = estimator.tree_
    return Tree(t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                np.zeros(t.node_count) if values is None else values)


def _single_output(model: Any) -> None:
    if getattr(model, "n_outputs_", 1) != 1:
        raise ExportError(f"{type(model).__name__} has {model.n_outputs_} outputs; only single-output "
                          "models can be exported")


def _check_width(model: Any, x: Tensor | Table) -> None:
    width = x.width if isinstance(x, Tensor) else len(x.columns)
    n = getattr(model, "n_features_in_", width)
    if n != width:
        raise ExportError(f"{type(model).__name__} was fitted on {n} features but gets {width}")


def _class_trees(model: Any) -> list[Tree]:
    k = len(model.classes_)
    estimators = getattr(model, "estimators_", [model])
    return [_tree(e, e.tree_.value[:, 0, :k]) for e in estimators]


def _regression_trees(model: Any) -> list[Tree]:
    return [_tree(e, e.tree_.value[:, 0, 0]) for e in getattr(model, "estimators_", [model])]


# Decision trees and forests --------------------------------------------------------------------------


def _forest_thresholds(model: Any) -> dict[int, np.ndarray]:
    return _split_thresholds(_tree(e) for e in getattr(model, "estimators_", [model]))


@register(DecisionTreeRegressor, RandomForestRegressor, ExtraTreesRegressor, thresholds=_forest_thresholds)
def convert_forest_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    _check_width(model, x)
    _single_output(model)
    trees = _regression_trees(model)
    return Prediction(tree_sums(graph, x, x.width, trees, float32_input=True, average=True))


@register(DecisionTreeClassifier, RandomForestClassifier, ExtraTreesClassifier, thresholds=_forest_thresholds)
def convert_forest_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    _check_width(model, x)
    _single_output(model)
    trees = _class_trees(model)
    k = len(model.classes_)
    if k == 2 and _complement_error(trees) <= 1e-9:  # one value a leaf: 1000 rows 14% faster than votes
        ones = [replace(t, value=np.asarray(t.value)[:, 1]) for t in trees]
        p1 = tree_sums(graph, x, x.width, ones, float32_input=True, average=True)
        return ClassScores(binary_probabilities(graph, p1), list(model.classes_))
    votes = tree_votes(graph, x, x.width, trees, float32_input=True)  # fully grown trees: pure leaves
    if votes is not None:
        return ClassScores(votes, list(model.classes_))
    fractions = tree_vectors(graph, x, x.width, trees, float32_input=True)  # [N, T, K]
    if isinstance(model, DecisionTreeClassifier):
        return ClassScores(reshape(graph, fractions, [-1, k]), list(model.classes_))
    return ClassScores(mean_over_trees(graph, fractions), list(model.classes_))


def _complement_error(trees: list[Tree]) -> float:
    """A bound on the relative error of ``1 - p1`` against sklearn's class-0 mean ``p0`` (its own sum of
    the class-0 fractions over ``T`` trees, divided by ``T``).

    Each leaf's two fractions add up to 1 within an ulp; the two sums in tree order each err by at most
    ``u * T**2 / 2`` (``u = 2**-53``, partial sums below ``T``); the divisions and the subtraction add
    about ``u``. So ``|(1 - p1) - p0| <= u * (T + 3)``, and a nonzero ``p0`` is at least the smallest
    nonzero class-0 fraction of a leaf over ``T``. Typical forests stay far inside 1e-9 (leaves of a few
    rows: fractions like 1/2 or 1/5); large leaves with one odd row out do not."""
    n = len(trees)
    zeros = [np.asarray(t.value)[np.asarray(t.left) < 0, 0] for t in trees]
    f0 = np.concatenate(zeros)
    smallest = float(f0[f0 > 0].min(initial=1.0))
    return 2.0**-53 * (n + 3) * n / smallest


# Gradient boosting -------------------------------------------------------------------------------------


def _gb_init(model: Any) -> np.ndarray:
    """The init estimator's raw prediction, computed by sklearn itself: it is the same for every row."""
    init = model.init_
    constant = init == "zero" or (isinstance(init, DummyRegressor)) or (
        isinstance(init, DummyClassifier) and init.strategy in ("prior", "most_frequent", "constant"))
    if not constant:
        raise ExportError(f"{type(model).__name__} with init={init!r} cannot be exported; use the default "
                          "init (a DummyEstimator) or init='zero'")
    probe = np.zeros((1, model.n_features_in_), dtype=np.float32)
    return np.asarray(model._raw_predict_init(probe), dtype=np.float64)[0]


def _gb_raw(graph: Graph, model: Any, x: Tensor, leaf_scale: float = 1.0, zero_columns: int = 0) -> str:
    """``[N, K]`` raw predictions times ``leaf_scale``: init, then each stage's ``learning_rate * value``
    per class (``trees.tree_sums``)."""
    _check_width(model, x)
    init = _gb_init(model)
    stages = model.estimators_  # [n_stages, K]
    trees = [constant_tree(v) for v in init]
    trees += [_tree(e, model.learning_rate * e.tree_.value[:, 0, 0]) for e in stages.ravel()]
    return tree_sums(graph, x, x.width, trees, stages.shape[1], float32_input=True, leaf_scale=leaf_scale,
                     zero_columns=zero_columns)


def _gb_thresholds(model: Any) -> dict[int, np.ndarray]:
    return _split_thresholds(_tree(e) for e in model.estimators_.ravel())


@register(GradientBoostingRegressor, thresholds=_gb_thresholds)
def convert_gb_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    return Prediction(_gb_raw(graph, model, x))


@register(GradientBoostingClassifier, thresholds=_gb_thresholds)
def convert_gb_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    classes = list(model.classes_)
    loss = type(model._loss).__name__
    if loss == "HalfMultinomialLoss":
        raw = _gb_raw(graph, model, x)
        return ClassScores(softmax(graph, raw), classes, raw)
    if loss not in ("HalfBinomialLoss", "ExponentialLoss"):
        raise ExportError(f"GradientBoostingClassifier with loss {model.loss!r} cannot be exported")
    # [-raw, 0] (exponential loss: [-2 raw, 0], the sigmoid of 2 raw); class 1 where raw >= 0
    pair = _gb_raw(graph, model, x, -1.0 if loss == "HalfBinomialLoss" else -2.0, zero_columns=1)
    return ClassScores(binary_from_negated(graph, pair), classes, pair, ties="last")


# Histogram gradient boosting ---------------------------------------------------------------------------


def hist_categorical(model: Any) -> dict[int, CategoricalColumn]:
    """The native categorical input columns (``categorical_features``): scikit-learn's OrdinalEncoder turns a
    value into its position among the categories seen in fit (sorted), anything else (NaN, an unseen
    category) into NaN, which the splits send where they send missing values."""
    if model.is_categorical_ is None or not np.any(model.is_categorical_):
        return {}
    encoder = model._preprocessor.named_transformers_["encoder"]
    columns = np.flatnonzero(model.is_categorical_)
    return {int(c): CategoricalColumn(tuple(cats.tolist()), np.nan, "exact")
            for c, cats in zip(columns, encoder.categories_, strict=True)}


def _hist_order(model: Any) -> np.ndarray:
    """The input column of each feature the trees read: the preprocessor puts categorical columns first."""
    n = model.n_features_in_
    if model.is_categorical_ is None or not np.any(model.is_categorical_):
        return np.arange(n)
    return np.concatenate([np.flatnonzero(model.is_categorical_), np.flatnonzero(~model.is_categorical_)])


def _bits(bitset: np.ndarray) -> set[int]:
    words = np.asarray(bitset, dtype=np.uint32)
    return {v for v in range(32 * len(words)) if (int(words[v // 32]) >> (v % 32)) & 1}


def _hist_trees(model: Any) -> list[list[Tree]]:
    """Trees on the model's input columns (in its order). A categorical split sends the known categories of
    its left bitset left and every other value (NaN, unknown, negative) where NaN goes (``_predictor.pyx``):
    as a membership test, the members are the categories of the side NaN does not take."""
    order = _hist_order(model)
    known = {}
    if model.is_categorical_ is not None and np.any(model.is_categorical_):
        mapper = model._bin_mapper
        known = {int(f): {int(v) for v in mapper.bin_thresholds_[f]} for f in np.flatnonzero(mapper.is_categorical_)}
    rounds = []
    for predictors in model._predictors:
        trees = []
        for p in predictors:
            n = p.nodes
            leaf = n["is_leaf"].astype(bool)
            left = np.where(leaf, -1, n["left"].astype(np.int64))
            right = np.where(leaf, -1, n["right"].astype(np.int64))
            missing_left = n["missing_go_to_left"].astype(bool)
            threshold = n["num_threshold"].astype(np.float64)
            member: list[np.ndarray | None] = [None] * len(n)
            for i in np.flatnonzero(n["is_categorical"].astype(bool) & ~leaf):
                cats = known[int(n["feature_idx"][i])]
                goes_left = _bits(p.raw_left_cat_bitsets[n["bitset_idx"][i]]) & cats
                if missing_left[i]:  # members go right; the rest (NaN and unknown values) left
                    member[i] = np.array(sorted(cats - goes_left), dtype=np.float64)
                    left[i], right[i] = right[i], left[i]
                else:
                    member[i] = np.array(sorted(goes_left), dtype=np.float64)
                missing_left[i], threshold[i] = False, 0.0
            trees.append(Tree(order[n["feature_idx"].astype(np.int64)], threshold, left, right, missing_left,
                              n["value"], member=tuple(member) if any(m is not None for m in member) else None))
        rounds.append(trees)
    return rounds


def _hist_raw(graph: Graph, model: Any, x: Tensor | Table, leaf_scale: float = 1.0, zero_columns: int = 0) -> str:
    categorical = hist_categorical(model)
    if not categorical:
        x = x if isinstance(x, Tensor) else single_tensor(x, type(model).__name__)
    _check_width(model, x)
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    trees = [constant_tree(0.0 + b) for b in baseline]  # sklearn adds the baseline to zeros
    trees += [t for rnd in _hist_trees(model) for t in rnd]
    if categorical:
        x, positions = categorical_input(graph, x, categorical)
        trees = on_columns(trees, positions)
    assert isinstance(x, Tensor)
    return tree_sums(graph, x, x.width, trees, len(baseline), leaf_scale=leaf_scale, zero_columns=zero_columns)


def _hist_thresholds(model: Any) -> dict[int, np.ndarray]:
    trees = [t for rnd in _hist_trees(model) for t in rnd]
    found = _split_thresholds(trees)
    categorical = hist_categorical(model)
    for column, cats in categorical.items():  # numbers looked up among the categories: each, unseen ones
        if any(isinstance(c, int | float | np.number) for c in cats.categories or ()):
            found[column] = member_probes(trees, column, categorical)
    return found


@register(HistGradientBoostingRegressor, thresholds=_hist_thresholds, takes_table=True)
def convert_hist_regressor(graph: Graph, model: Any, x: Tensor | Table) -> Prediction:
    raw = _hist_raw(graph, model, x)
    link = type(model._loss.link).__name__
    if link == "IdentityLink":
        return Prediction(raw)
    if link == "LogLink":
        return Prediction(graph.op("Exp", [raw]))  # type: ignore[arg-type]
    raise ExportError(f"HistGradientBoostingRegressor with loss {model.loss!r} cannot be exported")


@register(HistGradientBoostingClassifier, thresholds=_hist_thresholds, takes_table=True)
def convert_hist_classifier(graph: Graph, model: Any, x: Tensor | Table) -> ClassScores:
    classes = list(model.classes_)
    if len(classes) > 2:
        raw = _hist_raw(graph, model, x)
        return ClassScores(softmax(graph, raw), classes, raw)
    pair = _hist_raw(graph, model, x, -1.0, zero_columns=1)  # [-raw, 0]: class 1 where raw > 0
    return ClassScores(binary_from_negated(graph, pair), classes, pair)
