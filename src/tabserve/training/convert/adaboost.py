"""AdaBoostClassifier (SAMME) and AdaBoostRegressor (AdaBoost.R2), member by member as scikit-learn.

- classifier: ``decision = (0 + t_0 + t_1 + ...) / sum(estimator_weights_)`` where ``t_i`` is ``w_i`` at
  the class member ``i`` predicts and ``-1 / (K - 1) * w_i`` elsewhere; binary, ``-d_0 + d_1`` and the
  label ``d > 0``; multiclass, the first largest. ``predict_proba``: ``softmax([-d, d] / 2)`` (binary) or
  ``softmax(d / (K - 1))`` (``links.softmax``);
- regressor: the weighted median of the members' predictions (``_get_median_predict``): the predictions
  sorted per row (``TopK``; which of equal predictions comes first does not change the value), their
  weights added up in that order (``CumSum``, in order as ``np.cumsum``), and the first prediction whose
  cumulative weight reaches ``0.5 *`` the total.
Members that are all scikit-learn trees (the default stumps) are read by one TreeEnsemble giving each
member's leaf per row (``trees.tree_values``), where its class position or prediction sits, instead of a
converted graph per member: 50 stumps, one row, 466 nodes become 10.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.ensemble import AdaBoostClassifier, AdaBoostRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.links import sign_decision, softmax
from tabserve.training.convert.members import (
    classifier_scores,
    in_order,
    label_index,
    member_thresholds,
    positions,
    regressor_column,
)
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register
from tabserve.training.convert.trees import Tree, sequential_sum, tree_values


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds((m, None) for m in model.estimators_)


def _single_trees(model: Any, x: Tensor) -> bool:
    """Every member a bare scikit-learn tree on every column: one TreeEnsemble can give all their leaves."""
    kinds = (DecisionTreeClassifier, DecisionTreeRegressor)
    return all(isinstance(m, kinds) and m.n_features_in_ == x.width and m.n_outputs_ == 1
               for m in model.estimators_)


def _leaf_table(graph: Graph, x: Tensor, model: Any, values: list[np.ndarray]) -> str:
    """``[N, T]``: column ``t`` is ``values[t][leaf]`` of the leaf the row reaches in member ``t`` (X read as
    float32, as the trees do)."""
    trees = [Tree(np.where(t.children_left >= 0, t.feature, 0), t.threshold, t.children_left,
                  t.children_right, t.missing_go_to_left, v)
             for t, v in ((m.tree_, v) for m, v in zip(model.estimators_, values, strict=True))]
    return tree_values(graph, x, x.width, trees, float32_input=True)


def _tree_votes(graph: Graph, model: Any, x: Tensor, classes: list[Any]) -> str:
    """``[N, T, K]``: ``w_t`` at the class tree ``t`` predicts, ``-1 / (K - 1) * w_t`` elsewhere. A tree's
    class is per leaf ``argmax`` of its fractions, normalised as ``DecisionTreeClassifier.predict_proba``."""
    c = graph.const
    k = len(classes)
    positions_of_leaves = []
    for member in model.estimators_:
        value = np.asarray(member.tree_.value[:, 0, :len(member.classes_)], np.float64)
        normalizer = value.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        where = positions(member.classes_, classes, "AdaBoostClassifier")
        positions_of_leaves.append(where[np.argmax(value / normalizer, axis=1)].astype(np.float64))
    leaves = _leaf_table(graph, x, model, positions_of_leaves)
    chosen = graph.op("Unsqueeze", [leaves, c(np.array([2], np.int64), "axes")])
    hit = graph.op("Equal", [chosen, c(np.arange(k, dtype=np.float64), "class_positions")])
    w = np.asarray(model.estimator_weights_[:len(model.estimators_)], np.float64).reshape(-1, 1)
    return graph.op("Where", [hit, c(w, "weight"), c(-1 / (k - 1) * w, "against")])  # type: ignore[return-value]


def _column(graph: Graph, values: str, j: int) -> str:
    c = graph.const
    return graph.op("Slice", [values, c(np.array([j], np.int64), "start"),  # type: ignore[return-value]
                              c(np.array([j + 1], np.int64), "end"), c(np.array([1], np.int64), "axis")])


@register(AdaBoostClassifier, thresholds=_thresholds)
def convert_adaboost_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    if getattr(model, "algorithm", "SAMME") not in ("SAMME", "deprecated"):
        raise ExportError(f"AdaBoostClassifier(algorithm={model.algorithm!r}) cannot be exported; "
                          "use 'SAMME'")
    x = numeric(x, model)
    classes = list(model.classes_)
    k = len(classes)
    if k < 2:
        raise ExportError("AdaBoostClassifier fitted on one class")
    c = graph.const
    if _single_trees(model, x):  # one TreeEnsemble for every member, the votes added in member order
        total = sequential_sum(graph, _tree_votes(graph, model, x, classes), axis=1)
        return _samme(graph, model, total, classes)
    terms = []
    for member, w in zip(model.estimators_, model.estimator_weights_, strict=False):
        scores = classifier_scores(graph, member, x, "AdaBoostClassifier")
        index = label_index(graph, scores)
        where = positions(scores.classes, classes, "AdaBoostClassifier")
        if not np.array_equal(where, np.arange(len(where))):
            index = graph.op("Gather", [c(where, "class_positions"), index], axis=0)  # type: ignore[assignment]
        expanded = graph.op("Unsqueeze", [index, c(np.array([1], np.int64), "axes")])
        hit = graph.op("Equal", [expanded, c(np.arange(k, dtype=np.int64), "class_positions")])
        against = c(np.float64(-1 / (k - 1) * w), "against")
        terms.append(graph.op("Where", [hit, c(np.float64(w), "weight"), against]))
    return _samme(graph, model, in_order(graph, terms), classes)


def _samme(graph: Graph, model: Any, total: str, classes: list[Any]) -> ClassScores:
    c = graph.const
    k = len(classes)
    pred = graph.op("Div", [total, c(np.float64(model.estimator_weights_.sum()), "weight_sum")])
    if k > 2:
        proba = softmax(graph, graph.op("Div", [pred, c(np.float64(k - 1), "k_minus_one")]))  # type: ignore[arg-type]
        return ClassScores(proba, classes, decision=pred)  # type: ignore[arg-type]
    d = graph.op("Add", [graph.op("Neg", [_column(graph, pred, 0)]), _column(graph, pred, 1)])  # type: ignore[arg-type]
    pair = graph.op("Concat", [graph.op("Neg", [d]), d], axis=1)
    proba = softmax(graph, graph.op("Div", [pair, c(np.float64(2.0), "two")]))  # type: ignore[arg-type]
    return ClassScores(proba, classes, decision=sign_decision(graph, d), scores=d)  # type: ignore[arg-type]


@register(AdaBoostRegressor, thresholds=_thresholds)
def convert_adaboost_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    x = numeric(x, model)
    c = graph.const
    n = len(model.estimators_)
    if _single_trees(model, x):  # one TreeEnsemble gives every member's prediction
        predictions = _leaf_table(graph, x, model, [m.tree_.value[:, 0, 0] for m in model.estimators_])
    else:
        columns = [regressor_column(graph, m, x, "AdaBoostRegressor") for m in model.estimators_]
        predictions = columns[0] if n == 1 else graph.op("Concat", columns, axis=1)
    ordered, order = graph.op("TopK", [predictions, c(np.array([n], np.int64), "k")], outputs=2, axis=1,
                              largest=0, sorted=1)
    weights = c(np.asarray(model.estimator_weights_[:n], np.float64), "estimator_weights")
    cdf = graph.op("CumSum", [graph.op("Gather", [weights, order], axis=0), c(np.array(1, np.int64), "axis")])
    total = graph.op("Gather", [cdf, c(np.array([n - 1], np.int64), "last")], axis=1)
    half = graph.op("Mul", [c(np.float64(0.5), "half"), total])
    reached = graph.cast(graph.op("GreaterOrEqual", [cdf, half]), TensorProto.INT32)
    first = graph.op("ArgMax", [reached], axis=1, keepdims=1)
    return Prediction(graph.op("GatherElements", [ordered, first], axis=1))  # type: ignore[arg-type]
