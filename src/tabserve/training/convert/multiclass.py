"""OneVsRestClassifier: one binary member per class, combined as scikit-learn does.

- each member's score is its ``decision_function``, or its positive-class probability when it has none
  (``_predict_binary``); the label is the first class with the largest score (scikit-learn walks the
  members backwards keeping equal maxima, which is ``np.argmax``'s first of equal maxima); binary (one
  member): the second class where the score is ``> 0`` (``> 0.5`` for a probability);
- ``predict_proba``: the members' positive-class probabilities (binary: ``[1 - p, p]``), divided by their
  row sum, added in class order, and left as they are where that sum is 0.
Older scikit-learn (1.6 among them) differs in both, and the export follows the installed one: its
``predict`` walks the members forwards, so the last of equal maxima wins, and its ``predict_proba``
divides 0 by 0 where the sum is 0 (NaN). No release note names the version, so which behaviour is
installed is found by asking it: a tiny OneVsRest of DummyClassifiers with equal scores, and one whose
scores are all 0 (``_installed_rules``, once per process).
Multilabel models (several labels per row) are refused: tabserve serves one label.
"""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any, Literal

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.multiclass import OneVsRestClassifier

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.links import sign_decision
from tabserve.training.convert.members import classifier_scores, decision_function, member_thresholds
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, register
from tabserve.training.convert.trees import sequential_sum

WHO = "OneVsRestClassifier"


def _positive(graph: Graph, probabilities: str) -> str:
    c = graph.const
    return graph.op("Slice", [probabilities, c(np.array([1], np.int64), "start"),  # type: ignore[return-value]
                              c(np.array([2], np.int64), "end"), c(np.array([1], np.int64), "axis")])


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds((m, None) for m in model.estimators_)


@cache
def _installed_rules() -> tuple[Literal["first", "last"], bool]:
    """How the installed OneVsRestClassifier breaks ties in ``predict`` and treats a row whose positive
    probabilities sum to 0 in ``predict_proba`` (True: left as it is, False: 0/0 = NaN)."""
    x, y = np.zeros((3, 1)), np.array([0, 1, 2])
    equal = OneVsRestClassifier(DummyClassifier(strategy="prior")).fit(x, y)  # every member scores 1/3
    ties: Literal["first", "last"] = "first" if equal.predict(x[:1])[0] == 0 else "last"
    zero = OneVsRestClassifier(DummyClassifier(strategy="constant", constant=0)).fit(x, y)  # every member 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # older versions divide 0 by 0
        kept = not np.isnan(zero.predict_proba(x[:1])).any()
    return ties, kept


@register(OneVsRestClassifier, thresholds=_thresholds)
def convert_one_vs_rest(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    if model.multilabel_:
        raise ExportError(f"{WHO} fitted on several labels per row (multilabel): tabserve serves one label "
                          "per row")
    x = numeric(x, model)
    classes = list(model.classes_)
    members = [(m, classifier_scores(graph, m, x, WHO)) for m in model.estimators_]
    with_proba = all(hasattr(m, "predict_proba") and s.probabilities is not None for m, s in members)
    scores, positives = [], []
    for member, result in members:
        positive = _positive(graph, result.probabilities) if result.probabilities is not None else None
        positives.append(positive)
        if hasattr(member, "decision_function"):
            scores.append(decision_function(graph, member, result, x, WHO))
        elif positive is not None:
            scores.append(positive)
        else:
            raise ExportError(f"{WHO}: {type(member).__name__} has neither decision_function "
                              "nor predict_proba")
    ties, zero_sum_kept = _installed_rules()
    probabilities = None
    if with_proba:
        y = positives[0] if len(positives) == 1 else graph.op("Concat", positives, axis=1)
        if len(positives) == 1:
            y = graph.op("Concat", [graph.op("Sub", [graph.const(np.float64(1.0), "one"), y]), y], axis=1)
        total = sequential_sum(graph, y, axis=1, keepdims=True)  # type: ignore[arg-type]
        probabilities = graph.op("Div", [y, total])
        if zero_sum_kept:
            nonzero = graph.op("Not", [graph.op("Equal", [total, graph.const(np.float64(0.0), "zero")])])
            probabilities = graph.op("Where", [nonzero, probabilities, y])
    if len(members) == 1:
        member = members[0][0]
        threshold = 0.0 if hasattr(member, "decision_function") else 0.5
        half = graph.const(np.float64(0.5), "half")
        over = scores[0] if threshold == 0.0 else graph.op("Sub", [scores[0], half])
        decision = sign_decision(graph, over)  # type: ignore[arg-type]
        return ClassScores(probabilities, classes, decision=decision, scores=scores[0])  # type: ignore[arg-type]
    joined = graph.op("Concat", scores, axis=1)
    return ClassScores(probabilities, classes, decision=joined, scores=joined,  # type: ignore[arg-type]
                       ties=ties)
