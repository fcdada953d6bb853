"""Nearest neighbours (KNeighborsClassifier/Regressor, NearestCentroid) with scikit-learn's distances.

Which distances decide depends on how scikit-learn searches (``_fit_method``), and the graph computes
the same formula:
- *direct*: ``sum((x - y) ** 2)`` (``euclidean``, ``sqrt`` of it where a distance is used) or
  ``sum(|x - y|)`` (``manhattan``), added feature by feature in order (one ``[N, S]`` tensor a feature),
  as the KD and ball trees and the generic brute search (``ArgKminClassMode``: the uniform classifier)
  do: the same doubles;
- *dot-product trick* (``EuclideanArgKmin``: a brute regressor, the distance-weighted brute classifier,
  and ``euclidean_distances``): ``max(|x|^2 + (-2 x . y) + |y|^2, 0)``, ``|y|^2`` of the training rows
  with scikit-learn's own function. BLAS adds ``x . y`` and ``|x|^2`` in another order than onnxruntime:
  a few ulps of ``|x| |y|``, so two neighbours at nearly the same distance could swap (not seen in the
  tests). As weights ``1 / d`` these distances are off by up to 3.6e-7 relative (100% at a training row,
  where they cancel): ``weights='distance'`` with a brute euclidean search is refused.

The ``k`` nearest rows come from ``TopK`` (smallest first, the lower index first among equal distances,
as scikit-learn's heap keeps the row it saw first; a tree search meets equal distances in its own
order, which matters only when rows at exactly the k-th distance carry different targets).
Weights: ``uniform``, or ``distance`` (``1 / d``; a row at distance 0 takes weight 1 and the others 0,
as ``_get_weights``). Classifier: weighted class counts added in neighbour order, divided by their sum;
label the first class with the largest count (``weighted_mode``'s sums). Regressor: the mean, or
``sum(y * w) / sum(w)``. Sums over the neighbours and classes follow numpy's pairwise order (``numpy_sum``).
NearestCentroid: ``-d^2 + 2 log(prior)`` on the features divided by ``within_class_std_dev_``
(``euclidean_distances``), probabilities by the discriminant mixin; the label by the nearest centroid
(dot-product trick) when the priors are uniform, else the largest score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestCentroid

from tabserve.errors import ExportError
from tabserve.training.convert.discriminant import exp_log_softmax
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register
from tabserve.training.convert.trees import sequential_sum

_AXIS_1 = np.array([1], dtype=np.int64)


def direct(graph: Graph, x: Tensor, points: np.ndarray, metric: str) -> str:
    """``[N, S]``: ``sum((x - p)^2)`` (euclidean, squared) or ``sum(|x - p|)``, features added in order."""
    # one feature at a time on [N, S] tensors: the memory of the answer, not N * S * F
    c = graph.const
    points = np.asarray(points, np.float64)
    columns = graph.op("Split", [x.name], axis=1, outputs=x.width, num_outputs=x.width, base="feature")
    total = None
    for f, column in enumerate([columns] if isinstance(columns, str) else columns):
        d = graph.op("Sub", [column, c(points[:, f].copy(), "points")])
        term = graph.op("Mul", [d, d]) if metric == "euclidean" else graph.op("Abs", [d])
        total = term if total is None else graph.op("Add", [total, term])
    return total  # type: ignore[return-value]


def dot_trick(graph: Graph, x: Tensor, points: np.ndarray, norms: np.ndarray) -> str:
    """``[N, S]``: ``max((|x|^2 + (-2 x . p)) + |p|^2, 0)``, squared euclidean as BLAS-based code finds it."""
    c = graph.const
    x_norms = graph.op("ReduceSum", [graph.op("Mul", [x.name, x.name]), c(_AXIS_1, "axis")], keepdims=1)
    middle = graph.op("MatMul", [x.name, c(-2.0 * np.asarray(points, np.float64).T, "minus_2_points")])
    total = graph.op("Add", [graph.op("Add", [x_norms, middle]), c(np.asarray(norms, np.float64), "norms")])
    return graph.op("Max", [total, c(np.array(0.0), "zero")])  # type: ignore[return-value]


def numpy_sum(graph: Graph, values: str, n: int) -> str:
    """``values.sum(axis=1, keepdims=True)`` (axis 1 of length ``n``) in numpy's order: one by one below 8
    terms; up to 128, eight running sums ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))`` then the rest
    one by one; beyond, the two halves (cut at a multiple of 8) summed so and added."""
    if n < 8:
        return sequential_sum(graph, values, axis=1, keepdims=True)
    if n > 128:
        half = n // 2 - (n // 2) % 8
        return graph.op("Add", [numpy_sum(graph, _part(graph, values, 0, half), half),  # type: ignore
                                numpy_sum(graph, _part(graph, values, half, n), n - half)])
    lanes, i = _part(graph, values, 0, 8), 8
    while i < n - n % 8:
        lanes, i = graph.op("Add", [lanes, _part(graph, values, i, i + 8)]), i + 8
    pairs = graph.op("Add", [_part(graph, lanes, 0, 8, 2), _part(graph, lanes, 1, 8, 2)])  # type: ignore
    fours = graph.op("Add", [_part(graph, pairs, 0, 4, 2), _part(graph, pairs, 1, 4, 2)])  # type: ignore
    total = graph.op("Add", [_part(graph, fours, 0, 1), _part(graph, fours, 1, 2)])  # type: ignore[arg-type]
    for j in range(i, n):
        total = graph.op("Add", [total, _part(graph, values, j, j + 1)])
    return total  # type: ignore[return-value]


def _part(graph: Graph, values: str, start: int, end: int, step: int = 1) -> str:
    c = graph.const
    bounds = [c(np.array([start], np.int64), "start"), c(np.array([end], np.int64), "end")]
    step_by = c(np.array([step], np.int64), "step")
    return graph.op("Slice", [values, *bounds, c(_AXIS_1, "axis"), step_by])  # type: ignore[return-value]


def _metric(model: Any) -> str:
    metric = model.effective_metric_
    if metric == "minkowski":  # p=2 and p=1 come as euclidean and manhattan
        metric = {2: "euclidean", 1: "manhattan"}.get(model.effective_metric_params_.get("p"), metric)
    if metric not in ("euclidean", "manhattan") or model.effective_metric_params_.get("w") is not None:
        raise ExportError(f"{type(model).__name__}(metric={model.metric!r}) has no exact converter; use "
                          "metric='minkowski' with p=2 or p=1 (euclidean, manhattan)")
    return metric


def _neighbours(graph: Graph, model: Any, x: Tensor, trick: bool) -> tuple[str, str]:
    """The ``k`` nearest training rows: their distances ``[N, k]`` (None-like where unused) and indices."""
    metric = _metric(model)
    points = np.asarray(model._fit_X, np.float64)
    if trick and metric == "euclidean" and model._fit_method == "brute":
        if model.weights == "distance":
            raise ExportError(
                f"{type(model).__name__}(weights='distance') searched by brute force (algorithm="
                f"{model.algorithm!r}, {points.shape[1]} features) weighs by euclidean distances from BLAS's "
                "|x|^2 - 2 x.y + |y|^2, whose rounding the graph cannot reproduce (measured: 3.6e-7 "
                "relative on diabetes, and a different answer at a training row, where the distance cancels "
                "to a few ulps instead of 0); fit it with algorithm='kd_tree' or 'ball_tree' (exact "
                "distances, the same neighbours) or with p=1")
        from sklearn.metrics._pairwise_distances_reduction._base import _sqeuclidean_row_norms64

        reduced = dot_trick(graph, x, points, np.asarray(_sqeuclidean_row_norms64(points, 1)))
    else:
        reduced = direct(graph, x, points, metric)
    k = graph.const(np.array([model.n_neighbors], np.int64), "k")
    values, index = graph.op("TopK", [reduced, k], outputs=2, largest=0, sorted=1)
    distances = graph.op("Sqrt", [values]) if metric == "euclidean" else values
    return distances, index  # type: ignore[return-value]


def _weights(graph: Graph, distances: str) -> str:
    """``1 / d``; in a row with a distance of 0, 1 where it is 0 and 0 elsewhere (``_get_weights``)."""
    c = graph.const
    inverse = graph.op("Div", [c(np.array(1.0), "one"), distances])
    infinite = graph.op("IsInf", [inverse])
    flags = graph.cast(infinite, TensorProto.DOUBLE)
    any_row = graph.op("ReduceMax", [flags, c(_AXIS_1, "axis")], keepdims=1)
    exact = graph.op("Greater", [any_row, c(np.array(0.0), "zero")])
    return graph.op("Where", [exact, graph.cast(infinite, TensorProto.DOUBLE), inverse])  # type: ignore


def _check(model: Any) -> None:
    if callable(model.weights) or model.weights not in ("uniform", "distance"):
        raise ExportError(f"{type(model).__name__}(weights={model.weights!r}) has no exact converter; "
                          "use weights='uniform' or 'distance'")
    if np.ndim(model._y) != 1:
        raise ExportError(f"{type(model).__name__} was fitted on several targets; tabserve serves one")


@register(KNeighborsClassifier)
def convert_knn_classifier(graph: Graph, model: KNeighborsClassifier, x: Tensor) -> ClassScores:
    _check(model)
    x = numeric(x, model)
    c = graph.const
    uniform = model.weights == "uniform"
    distances, index = _neighbours(graph, model, x, trick=not uniform)
    labels = graph.op("Gather", [c(np.asarray(model._y, np.int64), "neighbour_class"), index], axis=0)
    k = len(model.classes_)
    column = graph.op("Unsqueeze", [labels, c(np.array([2], np.int64), "axis")])
    one_hot = graph.cast(graph.op("Equal", [column, c(np.arange(k, dtype=np.int64), "class_codes")]),
                         TensorProto.DOUBLE)
    if uniform:
        counts = graph.op("ReduceSum", [one_hot, c(_AXIS_1, "axis")], keepdims=0)  # small integers: exact
        probabilities = graph.op("Div", [counts, c(np.array(float(model.n_neighbors)), "k")])
        return ClassScores(probabilities, list(model.classes_), decision=counts)  # type: ignore[arg-type]
    weights = _weights(graph, distances)
    weighted = graph.op("Mul", [one_hot, graph.op("Unsqueeze", [weights, c(np.array([2], np.int64), "ax")])])
    scores = sequential_sum(graph, weighted, axis=1)  # proba[:, class] += w, neighbour by neighbour
    total = numpy_sum(graph, scores, k)
    # predict's weighted_mode adds each class's weights with numpy's sum, the first largest wins
    mode = graph.op("Squeeze", [numpy_sum(graph, weighted, model.n_neighbors), c(_AXIS_1, "axis")])
    return ClassScores(graph.op("Div", [scores, total]), list(model.classes_), decision=mode)  # type: ignore


@register(KNeighborsRegressor)
def convert_knn_regressor(graph: Graph, model: KNeighborsRegressor, x: Tensor) -> Prediction:
    _check(model)
    x = numeric(x, model)
    c = graph.const
    distances, index = _neighbours(graph, model, x, trick=True)
    targets = graph.op("Gather", [c(np.asarray(model._y, np.float64), "neighbour_target"), index], axis=0)
    k = model.n_neighbors
    if model.weights == "uniform":
        total = numpy_sum(graph, targets, k)
        return Prediction(graph.op("Div", [total, c(np.array(float(k)), "k")]))  # type: ignore[arg-type]
    weights = _weights(graph, distances)
    num = numpy_sum(graph, graph.op("Mul", [targets, weights]), k)  # type: ignore[arg-type]
    denominator = numpy_sum(graph, weights, k)
    return Prediction(graph.op("Div", [num, denominator]))  # type: ignore[arg-type]


@register(NearestCentroid)
def convert_nearest_centroid(graph: Graph, model: NearestCentroid, x: Tensor) -> ClassScores:
    if model.metric != "euclidean":
        raise ExportError(f"NearestCentroid(metric={model.metric!r}) has no predict_proba; fit it with "
                          "metric='euclidean' (exported)")
    from sklearn.utils.extmath import row_norms

    x = numeric(x, model)
    c = graph.const
    centroids = np.asarray(model.centroids_, np.float64)
    std = np.asarray(model.within_class_std_dev_, np.float64)
    divisor = np.where(std != 0, std, 1.0)  # x / 1 is x: the columns scikit-learn leaves alone
    scaled = Tensor(graph.op("Div", [x.name, c(divisor, "std")]), x.width)  # type: ignore[arg-type]
    normalized = centroids / divisor
    d2 = dot_trick(graph, scaled, normalized, row_norms(normalized, squared=True))
    squared = graph.op("Mul", [graph.op("Sqrt", [d2]), graph.op("Sqrt", [d2])])  # sqrt, then ** 2
    log_prior = 2.0 * np.log(np.asarray(model.class_prior_, np.float64))
    scores = graph.op("Add", [graph.op("Neg", [squared]), c(log_prior, "log_prior")])
    probabilities = exp_log_softmax(graph, scores)  # type: ignore[arg-type]
    classes = list(model.classes_)
    if np.isclose(model.class_prior_, 1 / len(classes)).all():  # predict: the nearest centroid, raw X
        from sklearn.metrics._pairwise_distances_reduction._base import _sqeuclidean_row_norms64

        nearest = dot_trick(graph, x, centroids, np.asarray(_sqeuclidean_row_norms64(centroids, 1)))
        closest = graph.op("Neg", [nearest])
        return ClassScores(probabilities, classes, decision=closest)  # type: ignore[arg-type]
    return ClassScores(probabilities, classes, decision=scores)  # type: ignore[arg-type]
