"""BaggingClassifier and BaggingRegressor: each member on its columns (``estimators_features_``), averaged.

- classifier: ``proba = 0 + p_0 + p_1 + ...`` in member order, divided by ``n_estimators``
  (``_parallel_predict_proba`` with ``n_jobs=1``), where ``p_i`` is the member's ``predict_proba``, its
  columns moved to the classes it saw (a bootstrap sample can miss a class), or, for a member without
  ``predict_proba``, a vote: 1 at its label. The label is ``classes_[argmax(proba)]``, the first of equal
  maxima;
- regressor: ``(0 + y_0 + y_1 + ...) / n_estimators``.

Members are fitted on the label-encoded target (classes ``0..K-1``). With ``n_jobs > 1`` scikit-learn
adds per job and then the jobs' sums, which can move the last bit (far below 1e-9).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import BaggingClassifier, BaggingRegressor

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


def _members(model: Any) -> list[tuple[Any, np.ndarray]]:
    return [(m, np.asarray(f, dtype=np.int64)) for m, f in zip(model.estimators_, model.estimators_features_,
                                                               strict=True)]


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds(_members(model))


def _mean(graph: Graph, terms: list[str], n: int) -> str:
    return graph.op("Div", [in_order(graph, terms), graph.const(np.float64(n), "n_estimators")])  # type: ignore[return-value]


@register(BaggingClassifier, thresholds=_thresholds)
def convert_bagging_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    classes = list(model.classes_)
    k = len(classes)
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
    terms = [regressor_column(graph, member, columns_of(graph, x, features), "BaggingRegressor")
             for member, features in _members(model)]
    return Prediction(_mean(graph, terms, model.n_estimators))
