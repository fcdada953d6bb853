"""CalibratedClassifierCV (sigmoid and isotonic; every ``cv``, ``ensemble`` True or False, FrozenEstimator).

Each of ``calibrated_classifiers_`` (one per fold, or one) reads its estimator's ``decision_function``, or
``predict_proba`` when it has none (``_get_response_values``: binary, the positive class's column only),
and maps each class's column through that class's calibrator:
- sigmoid: ``expit(-(a_ * f + b_))`` (scipy's ``1 / (1 + exp(-x))``, ``links.expit``);
- isotonic: ``f`` clipped to ``[X_min_, X_max_]``, then scipy's ``interp1d`` step for step: the segment
  ``i = clip(searchsorted(X_thresholds_, f), 1, M - 1)`` (a count of the thresholds below ``f``),
  ``slope * (f - x[i-1]) + y[i-1]`` with ``slope = (y[i] - y[i-1]) / (x[i] - x[i-1])`` as numpy computes it.
Binary: ``[1 - p, p]``; multiclass: divided by the row sum (added in class order, as numpy for fewer than 8
classes), uniform ``1 / K`` where it is 0; then values in ``(1, 1 + 1e-5]`` read as 1. The classifiers'
probabilities are added from 0 in order and divided by their number; the label is the first of the largest.
``method='temperature'`` is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.preprocessing import LabelEncoder

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.links import expit
from tabserve.training.convert.members import (
    classifier_scores,
    decision_function,
    in_order,
    member_thresholds,
)
from tabserve.training.convert.registry import ClassScores, convert, lookup, register
from tabserve.training.convert.trees import sequential_sum

WHO = "CalibratedClassifierCV"


def _column(graph: Graph, values: str, j: int) -> str:
    c = graph.const
    return graph.op("Slice", [values, c(np.array([j], np.int64), "start"),  # type: ignore[return-value]
                              c(np.array([j + 1], np.int64), "end"), c(np.array([1], np.int64), "axis")])


def _sigmoid(graph: Graph, calibrator: Any, f: str) -> str:
    c = graph.const
    product = graph.op("Mul", [f, c(np.float64(calibrator.a_), "a")])
    v = graph.op("Add", [product, c(np.float64(calibrator.b_), "b")])
    return expit(graph, graph.op("Neg", [v]))  # type: ignore[arg-type]


def _isotonic(graph: Graph, calibrator: Any, f: str) -> str:
    c = graph.const
    x = np.asarray(calibrator.X_thresholds_, np.float64)
    y = np.asarray(calibrator.y_thresholds_, np.float64)
    if calibrator.out_of_bounds != "clip":
        raise ExportError(f"{WHO}: an isotonic calibrator with out_of_bounds={calibrator.out_of_bounds!r}")
    if len(y) == 1:  # one value: a constant
        return graph.op("Add", [graph.op("Mul", [f, c(np.float64(0.0), "zero")]), c(y, "constant")])  # type: ignore[return-value]
    t = graph.op("Min", [graph.op("Max", [f, c(np.float64(calibrator.X_min_), "x_min")]),
                         c(np.float64(calibrator.X_max_), "x_max")])
    below = graph.cast(graph.op("Less", [c(x, "x_thresholds"), t]), TensorProto.INT64)  # [N, M]
    count = graph.op("ReduceSum", [below, c(np.array([1], np.int64), "axis")], keepdims=0)
    hi = graph.op("Clip", [count, c(np.int64(1), "one"), c(np.int64(len(x) - 1), "last")])
    lo = graph.op("Sub", [hi, c(np.int64(1), "one")])
    slope = (y[1:] - y[:-1]) / (x[1:] - x[:-1])  # per segment, as scipy computes each row's
    x_lo = graph.op("Gather", [c(x[:-1].reshape(-1, 1), "x_lo"), lo], axis=0)
    y_lo = graph.op("Gather", [c(y[:-1].reshape(-1, 1), "y_lo"), lo], axis=0)
    s = graph.op("Gather", [c(slope.reshape(-1, 1), "slope"), lo], axis=0)
    return graph.op("Add", [graph.op("Mul", [s, graph.op("Sub", [t, x_lo])]), y_lo])  # type: ignore[return-value]


def _response(graph: Graph, estimator: Any, x: Tensor) -> str:
    """``_get_response_values(estimator, X, ['decision_function', 'predict_proba'])``: ``[N, 1]`` binary."""
    scores = classifier_scores(graph, estimator, x, WHO)
    if hasattr(estimator, "decision_function"):
        return decision_function(graph, estimator, scores, x, WHO)
    if scores.probabilities is None:
        raise ExportError(f"{WHO}: {type(estimator).__name__} has neither decision_function "
                          "nor predict_proba")
    return _column(graph, scores.probabilities, 1) if len(scores.classes) == 2 else scores.probabilities


def _calibrated(graph: Graph, calibrated: Any, x: Tensor, k: int) -> str:
    if calibrated.method not in ("sigmoid", "isotonic"):
        raise ExportError(f"{WHO}(method={calibrated.method!r}) cannot be exported; "
                          "use 'sigmoid' or 'isotonic'")
    predictions = _response(graph, calibrated.estimator, x)
    calibrate = _sigmoid if calibrated.method == "sigmoid" else _isotonic
    if k == 2:
        p = calibrate(graph, calibrated.calibrators[0], predictions)
        proba = graph.op("Concat", [graph.op("Sub", [graph.const(np.float64(1.0), "one"), p]), p], axis=1)
    else:
        where = LabelEncoder().fit(calibrated.classes).transform(calibrated.estimator.classes_)
        columns: list[str | None] = [None] * k
        for j, (position, calibrator) in enumerate(zip(where, calibrated.calibrators, strict=False)):
            columns[int(position)] = calibrate(graph, calibrator, _column(graph, predictions, j))
        zero = None
        for i, col in enumerate(columns):
            if col is None:  # a class the fold's estimator never saw
                first = _column(graph, predictions, 0)
                zero = zero or graph.op("Mul", [first, graph.const(np.float64(0.0), "zero")])
                columns[i] = zero  # type: ignore[assignment]
        p = graph.op("Concat", columns, axis=1)  # type: ignore[arg-type]
        total = sequential_sum(graph, p, axis=1, keepdims=True)  # type: ignore[arg-type]
        nonzero = graph.op("Not", [graph.op("Equal", [total, graph.const(np.float64(0.0), "zero")])])
        divided = graph.op("Div", [p, total])
        proba = graph.op("Where", [nonzero, divided, graph.const(np.float64(1 / k), "uniform")])
    c = graph.const
    over = graph.op("And", [graph.op("Greater", [proba, c(np.float64(1.0), "one")]),
                            graph.op("LessOrEqual", [proba, c(np.float64(1.0 + 1e-5), "one_plus")])])
    return graph.op("Where", [over, c(np.float64(1.0), "one"), proba])  # type: ignore[return-value]


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds((c.estimator, None) for c in model.calibrated_classifiers_)


@register(CalibratedClassifierCV, thresholds=_thresholds)
def convert_calibrated_classifier(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    k = len(model.classes_)
    probas = [_calibrated(graph, c, x, k) for c in model.calibrated_classifiers_]
    total = in_order(graph, probas)
    mean = graph.op("Div", [total, graph.const(np.float64(len(probas)), "count")])
    return ClassScores(mean, list(model.classes_))  # type: ignore[arg-type]


def _frozen_thresholds(model: Any) -> dict[int, np.ndarray]:
    thresholds = lookup(model.estimator).thresholds
    return thresholds(model.estimator) if thresholds is not None else {}


@register(FrozenEstimator, thresholds=_frozen_thresholds, takes_table=True)
def convert_frozen(graph: Graph, model: Any, x: Any) -> Any:
    """A fitted estimator frozen for calibration (``cv='prefit'``'s successor): the estimator itself."""
    return convert(graph, model.estimator, x)
