"""BaggingClassifier and BaggingRegressor: each member on its columns (``estimators_features_``), averaged.

- classifier: ``proba = 0 + p_0 + p_1 + ...`` in member order, divided by ``n_estimators``
  (``_parallel_predict_proba`` with ``n_jobs=1``), where ``p_i`` is the member's ``predict_proba``, its
  columns moved to the classes it saw (a bootstrap sample can miss a class), or, for a member without
  ``predict_proba``, a vote: 1 at its label. The label is ``classes_[argmax(proba)]``, the first of equal
  maxima;
- regressor: ``(0 + y_0 + y_1 + ...) / n_estimators``.

Members are fitted on the label-encoded target (classes ``0..K-1``). With ``n_jobs > 1`` scikit-learn
adds per job and then the jobs' sums, which can move the last bit (far below 1e-9).

Members that are all scikit-learn trees are one TreeEnsemble, each tree's splits moved to the input columns
its features name: a regressor's leaves averaged by the ensemble (the sum in order, one division), a
classifier's leaf vectors (normalised as ``predict_proba``, spread to every class) read from a table and
averaged in tree order (``trees.mean_over_trees``), as a forest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.members import (
    classifier_scores,
    columns_of,
    in_order,
    label_index,
    member_thresholds,
    one_hot,
    positions,
    regressor_column,
    spread,
)
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register
from tabserve.training.convert.trees import Tree, mean_over_trees, tree_sums, tree_vectors


def _members(model: Any) -> list[tuple[Any, np.ndarray]]:
    return [(m, np.asarray(f, dtype=np.int64)) for m, f in zip(model.estimators_, model.estimators_features_,
                                                               strict=True)]


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds(_members(model))


def _as_trees(model: Any, kind: type, x: Tensor) -> list[tuple[Any, np.ndarray]] | None:
    """The members with their columns when every member is a bare tree of ``kind``, else None."""
    members = _members(model)
    if not all(isinstance(m, kind) and m.n_outputs_ == 1 for m, _ in members):
        return None
    if any(len(f) and int(f.max()) >= x.width for _, f in members):
        return None
    return members


def _tree(member: Any, features: np.ndarray, value: np.ndarray) -> Tree:
    """The member's tree on the bagging model's input columns."""
    t = member.tree_
    split = t.children_left >= 0
    feature = np.where(split, features[np.where(split, t.feature, 0)], 0)
    return Tree(feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left, value)


def _leaf_probabilities(member: Any, k: int) -> np.ndarray:
    """Per node, ``predict_proba``'s row for a row ending there, spread to the ``k`` classes."""
    value = np.asarray(member.tree_.value[:, 0, :len(member.classes_)], np.float64)
    normalizer = value.sum(axis=1)[:, np.newaxis]
    normalizer[normalizer == 0.0] = 1.0
    out = np.zeros((len(value), k))
    out[:, positions(member.classes_, np.arange(k), "BaggingClassifier")] = value / normalizer
    return out


def _mean(graph: Graph, terms: list[str], n: int) -> str:
    return graph.op("Div", [in_order(graph, terms), graph.const(np.float64(n), "n_estimators")])  # type: ignore[return-value]


@register(BaggingClassifier, thresholds=_thresholds)
def convert_bagging_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    classes = list(model.classes_)
    k = len(classes)
    trees = _as_trees(model, DecisionTreeClassifier, x)
    if trees is not None and len(trees) == model.n_estimators:
        table = [_tree(m, f, _leaf_probabilities(m, k)) for m, f in trees]
        vectors = tree_vectors(graph, x, x.width, table, float32_input=True)
        return ClassScores(mean_over_trees(graph, vectors), classes)
    terms = []
    for member, features in _members(model):
        scores = classifier_scores(graph, member, columns_of(graph, x, features), "BaggingClassifier")
        where = positions(scores.classes, np.arange(k), "BaggingClassifier")
        if hasattr(member, "predict_proba") and scores.probabilities is not None:
            terms.append(spread(graph, scores.probabilities, where, k))
        else:  # a vote for its label
            index = label_index(graph, scores)
            if not np.array_equal(where, np.arange(len(where))):
                index = graph.op("Gather", [graph.const(where, "class_positions"), index], axis=0)  # type: ignore[assignment]
            terms.append(one_hot(graph, index, k))
    return ClassScores(_mean(graph, terms, model.n_estimators), classes)


@register(BaggingRegressor, thresholds=_thresholds)
def convert_bagging_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    x = numeric(x, model)
    trees = _as_trees(model, DecisionTreeRegressor, x)
    if trees is not None and len(trees) == model.n_estimators:
        table = [_tree(m, f, m.tree_.value[:, 0, 0]) for m, f in trees]
        return Prediction(tree_sums(graph, x, x.width, table, float32_input=True, average=True))
    terms = [regressor_column(graph, member, columns_of(graph, x, features), "BaggingRegressor")
             for member, features in _members(model)]
    return Prediction(_mean(graph, terms, model.n_estimators))
