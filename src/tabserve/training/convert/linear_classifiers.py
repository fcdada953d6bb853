"""Linear classifiers whose labels come from ``decision_function``: RidgeClassifier(CV), LinearSVC,
Perceptron, PassiveAggressiveClassifier, SGDClassifier (every loss).

scikit-learn's ``decision_function`` is ``X @ coef_.T + intercept_`` (``linear.decision``, a few ulps of
the largest term), and ``predict`` takes class 1 where a binary score is ``> 0`` (``links.sign_decision``)
or the first of the largest scores. Most have no ``predict_proba``: they are exported with labels only
(``ClassScores(probabilities=None)``); the graph also outputs the scores as ``decision``.

SGDClassifier has probabilities for two losses, computed as it does:
- ``log_loss``: ``expit(d)``, ``[1 - p, p]`` when binary; otherwise each class's ``expit`` divided by
  their row sum (one-vs-rest, uniform where all are 0: ``linear.normalized``; NaN, 0 / 0, before
  scikit-learn 1.9, as it computes);
- ``modified_huber``: ``p = (clip(d, -1, 1) + 1) / 2``, ``[1 - p, p]`` when binary; otherwise divided by
  the row sum, uniform where it is 0. Every step is one IEEE operation as numpy's, so these are exact
  but for the row sum's order (an ulp).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import Perceptron, RidgeClassifier, RidgeClassifierCV, SGDClassifier
from sklearn.svm import LinearSVC

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import LR_UNIFORM_WHERE_ALL_ZERO, decision, normalized
from tabserve.training.convert.links import binary_probabilities, expit, sign_decision
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, register


# PassiveAggressiveClassifier by name: deprecated in scikit-learn 1.8, gone in 1.10
@register(RidgeClassifier, RidgeClassifierCV, LinearSVC, Perceptron, SGDClassifier,
          "sklearn.linear_model._passive_aggressive.PassiveAggressiveClassifier")
def convert_linear_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    name = type(model).__name__
    binarizer = getattr(model, "_label_binarizer", None)
    if binarizer is not None and str(getattr(binarizer, "y_type_", "")).startswith("multilabel"):
        raise ExportError(f"{name} fitted on several labels per row (multilabel): tabserve serves one label")
    classes = list(model.classes_)
    x = numeric(x, model)
    coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1, x.width)
    binary = len(classes) == 2
    if coef.shape[0] != (1 if binary else len(classes)):
        raise ExportError(f"{name} has {coef.shape[0]} rows of coefficients for {len(classes)} classes")
    d = decision(graph, x, coef, model.intercept_)
    label_from = sign_decision(graph, d) if binary else d
    probabilities = _probabilities(graph, model, d, len(classes)) if hasattr(model, "predict_proba") else None
    return ClassScores(probabilities, classes, decision=label_from, scores=d)


def _probabilities(graph: Graph, model: Any, d: str, k: int) -> str:
    loss = getattr(model, "loss", None)
    if not isinstance(model, SGDClassifier) or loss not in ("log_loss", "modified_huber"):
        raise ExportError(f"{type(model).__name__}(loss={loss!r}) has a predict_proba that tabserve cannot "
                          "reproduce exactly; SGDClassifier's log_loss and modified_huber are supported")
    if loss == "log_loss":
        p = expit(graph, d)
    else:
        c = graph.const
        clipped = graph.op("Max", [graph.op("Min", [d, c(np.float64(1.0), "one")]), c(np.float64(-1.0), "minus")])
        p = graph.op("Div", [graph.op("Add", [clipped, c(np.float64(1.0), "one")]), c(np.float64(2.0), "two")])
    if k == 2:
        return binary_probabilities(graph, p)  # type: ignore[arg-type]
    # log_loss is _predict_proba_lr (NaN where all are 0 before scikit-learn 1.9); modified_huber is uniform
    uniform = loss == "modified_huber" or LR_UNIFORM_WHERE_ALL_ZERO
    return normalized(graph, p, k, uniform_where_all_zero=uniform)  # type: ignore[arg-type]
