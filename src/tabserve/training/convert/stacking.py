"""StackingClassifier and StackingRegressor: the members' outputs side by side, then the final estimator.

``_concatenate_predictions`` in scikit-learn's order: per member its ``stack_method_`` output
(``predict_proba``: the first column dropped when the problem is binary; ``decision_function``: ``[N]``
binary as one column; ``predict``: the label's value or the regression value as one column), then the
input itself with ``passthrough``. The final estimator is converted on that matrix. Members and the final
classifier are fitted on the label-encoded target, so the final estimator's class positions are the
stacking model's ``classes_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import StackingClassifier, StackingRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.members import (
    classifier_scores,
    decision_function,
    label_index,
    member_thresholds,
    regressor_column,
)
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, convert, register


def _member_columns(graph: Graph, model: Any, member: Any, method: str, x: Tensor) -> tuple[str, int]:
    """One member's block of the meta features, ``[N, width]``, and its width."""
    who = type(model).__name__
    if isinstance(model, StackingRegressor):
        if method != "predict":
            raise ExportError(f"{who}: stack_method {method!r} of {type(member).__name__} cannot be exported")
        return regressor_column(graph, member, x, who), 1
    scores = classifier_scores(graph, member, x, who)
    k = len(scores.classes)
    if method == "predict_proba":
        if scores.probabilities is None:
            raise ExportError(f"{who}: {type(member).__name__} has no predict_proba")
        if k == 2:
            second = graph.op("Slice", [scores.probabilities, graph.const(np.array([1], np.int64), "start"),
                                        graph.const(np.array([2], np.int64), "end"),
                                        graph.const(np.array([1], np.int64), "axis")])
            return second, 1  # type: ignore[return-value]
        return scores.probabilities, k
    if method == "decision_function":
        return decision_function(graph, member, scores, x, who), 1 if k == 2 else k
    if method == "predict":  # the label itself, as a number
        values = np.asarray(scores.classes)
        if values.dtype.kind not in "iufb":
            raise ExportError(f"{who}: {type(member).__name__}'s labels are not numbers")
        label = graph.op("Gather", [graph.const(values.astype(np.float64).reshape(-1, 1), "labels"),
                                    label_index(graph, scores)], axis=0)
        return label, 1  # type: ignore[return-value]
    raise ExportError(f"{who}: stack_method {method!r} of {type(member).__name__} cannot be exported")


def _meta_features(graph: Graph, model: Any, x: Tensor) -> Tensor:
    x = numeric(x, model)
    blocks, width = [], 0
    for member, method in zip(model.estimators_, model.stack_method_, strict=True):
        block, w = _member_columns(graph, model, member, method, x)
        blocks.append(block)
        width += w
    if model.passthrough:
        blocks.append(x.name)
        width += x.width
    joined = blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, axis=1)
    return Tensor(joined, width)  # type: ignore[arg-type]


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds((m, None) for m in model.estimators_)


@register(StackingClassifier, thresholds=_thresholds)
def convert_stacking_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    if isinstance(model._label_encoder, list):
        raise ExportError("StackingClassifier fitted on several labels per row (multilabel): "
                          "tabserve serves one")
    meta = _meta_features(graph, model, x)
    final = classifier_scores(graph, model.final_estimator_, meta, "StackingClassifier")
    classes = list(model.classes_)
    if len(final.classes) != len(classes):
        raise ExportError(f"StackingClassifier: the final estimator knows {len(final.classes)} of "
                          f"{len(classes)} classes")
    return ClassScores(final.probabilities, classes, final.decision, final.ties, final.scores)


@register(StackingRegressor, thresholds=_thresholds)
def convert_stacking_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    result = convert(graph, model.final_estimator_, _meta_features(graph, model, x))
    if not isinstance(result, Prediction):
        raise ExportError("StackingRegressor's final estimator is not a regressor")
    return result
