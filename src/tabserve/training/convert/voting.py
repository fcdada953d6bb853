"""VotingClassifier and VotingRegressor: each member converted, then combined as scikit-learn does.

- soft voting: ``np.average(probas, axis=0, weights)``: the members' ``predict_proba`` times their weights,
  added in member order (a reduction over the outer axis), divided by the sum of the weights (the mean when
  there are none); the label is the first of the largest averages;
- hard voting: ``argmax(bincount(labels, weights))`` per row: each member's label adds its weight (or 1) to
  its class, in member order, and the first class with the largest total wins. There is no
  ``predict_proba``: the export serves labels only, as for any classifier without probabilities;
- VotingRegressor: ``np.average(predictions, axis=1, weights)``, the same sum over members in order.

Members are fitted on the label-encoded target (classes ``0..K-1``); the votes are mapped back to
``classes_`` by position. Members whose weight is None ('drop') are not in ``estimators_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import VotingClassifier, VotingRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.members import (
    classifier_scores,
    in_order,
    label_index,
    member_thresholds,
    one_hot,
    positions,
    regressor_column,
    spread,
)
from tabserve.training.convert.registry import ClassScores, Prediction, register


def _weights(model: Any) -> np.ndarray | None:
    weights = model._weights_not_none
    return None if weights is None else np.asarray(weights, dtype=np.float64)


def _average(graph: Graph, terms: list[str], weights: np.ndarray | None) -> str:
    """``np.average`` over the members: weighted terms added in order, then one division."""
    if weights is None:
        return graph.op("Div", [in_order(graph, terms), graph.const(np.float64(len(terms)), "count")])  # type: ignore[return-value]
    weighted = [t if w == 1.0 else graph.op("Mul", [t, graph.const(np.float64(w), "weight")])
                for t, w in zip(terms, weights, strict=True)]
    return graph.op("Div", [in_order(graph, weighted), graph.const(weights.sum(), "weight_sum")])  # type: ignore[return-value, arg-type]


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds((m, None) for m in model.estimators_)


@register(VotingClassifier, thresholds=_thresholds)
def convert_voting_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    classes = list(model.classes_)
    k = len(classes)
    encoded = np.arange(k)
    members = [(m, classifier_scores(graph, m, x, "VotingClassifier")) for m in model.estimators_]
    weights = _weights(model)
    if model.voting == "soft":
        probas = []
        for member, scores in members:
            if scores.probabilities is None:
                raise ExportError(f"VotingClassifier(voting='soft'): {type(member).__name__} has no "
                                  "predict_proba")
            where = positions(scores.classes, encoded, "VotingClassifier")
            probas.append(spread(graph, scores.probabilities, where, k))
        return ClassScores(_average(graph, probas, weights), classes)
    votes = []
    for i, (_, scores) in enumerate(members):
        where = positions(scores.classes, encoded, "VotingClassifier")
        index = label_index(graph, scores)
        if not np.array_equal(where, np.arange(len(where))):
            index = graph.op("Gather", [graph.const(where, "class_positions"), index], axis=0)  # type: ignore[assignment]
        votes.append(one_hot(graph, index, k, 1.0 if weights is None else float(weights[i])))
    counts = in_order(graph, votes)
    return ClassScores(None, classes, decision=counts)


@register(VotingRegressor, thresholds=_thresholds)
def convert_voting_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    columns = [regressor_column(graph, m, x, "VotingRegressor") for m in model.estimators_]
    return Prediction(_average(graph, columns, _weights(model)))
