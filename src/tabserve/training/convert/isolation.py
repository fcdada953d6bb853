"""IsolationForest: anomaly scores as scikit-learn computes them, as a graph of their own.

``score_samples = -2 ** -(depths / (n_trees * c(max_samples)))`` where ``depths = 0 + d_0 + d_1 + ...`` adds,
tree by tree in order, the leaf's depth plus ``c(n_node_samples) - 1`` (``_decision_path_lengths[leaf] +
_average_path_length_per_tree[leaf] - 1.0``, precomputed per leaf as numpy computes it); X is read as
float32 and each tree on its ``estimators_features_`` (thresholds moved as for the other scikit-learn trees,
``trees.float32_leq``). ``decision_function = score_samples - offset_``; ``predict`` is -1 where it is < 0,
else 1. One TreeEnsemble sums the depths, in order on one thread (``trees.tree_sums``).

A bundle of it has the task ``anomaly`` (``convert.export_exact``): outputs ``label``, ``score`` and
``decision``. ``export_anomaly`` builds a bare ``model.onnx`` with outputs ``score_samples``, ``decision``
(double ``[N]``) and ``label`` (int64 ``[N]``, -1 or 1) for whoever runs it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import TensorProto, helper
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.members import final_step
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import AnomalyScores, register
from tabserve.training.convert.trees import Tree, reshape, tree_sums

ANOMALY_OUTPUTS = ("score_samples", "decision", "label")


def _trees(model: Any) -> list[Tree]:
    trees = []
    members = zip(model.estimators_, model.estimators_features_, strict=True)
    for i, (estimator, features) in enumerate(members):
        t = estimator.tree_
        columns = np.asarray(features, dtype=np.int64)
        inner = t.children_left >= 0
        feature = np.where(inner, columns[np.maximum(t.feature, 0)], 0)
        leaf_depth = (model._decision_path_lengths[i] + model._average_path_length_per_tree[i]) - 1.0
        trees.append(Tree(feature, t.threshold, t.children_left, t.children_right,
                          np.asarray(t.missing_go_to_left, bool), np.asarray(leaf_depth, np.float64)))
    return trees


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    found: dict[int, list[np.ndarray]] = {}
    for tree in _trees(model):
        splits = tree.splits
        for f in np.unique(tree.feature[splits]):
            found.setdefault(int(f), []).append(tree.threshold[splits][tree.feature[splits] == f])
    return {f: np.unique(np.concatenate(v)) for f, v in sorted(found.items())}


def anomaly_scores(graph: Graph, model: Any, x: Tensor) -> tuple[str, str, str]:
    """``score_samples``, ``decision_function`` (double ``[N]``) and ``predict`` (int64 ``[N]``)."""
    x = numeric(x, model)
    if model.n_features_in_ != x.width:
        raise ExportError(f"IsolationForest was fitted on {model.n_features_in_} features but gets {x.width}")
    c = graph.const
    depths = reshape(graph, tree_sums(graph, x, x.width, _trees(model), float32_input=True), [-1])
    denominator = len(model.estimators_) * _average_path_length([model._max_samples])
    if denominator[0] != 0:
        ratio = graph.op("Div", [depths, c(np.float64(denominator[0]), "denominator")])
    else:  # one training sample: sklearn sets the ratio to 1
        nothing = graph.op("Mul", [depths, c(np.float64(0.0), "zero")])
        ratio = graph.op("Add", [nothing, c(np.float64(1.0), "one")])
    score = graph.op("Neg", [graph.op("Pow", [c(np.float64(2.0), "two"), graph.op("Neg", [ratio])])])
    decision = graph.op("Sub", [score, c(np.float64(model.offset_), "offset")])
    outlier = graph.op("Less", [decision, c(np.float64(0.0), "zero")])
    label = graph.op("Where", [outlier, c(np.int64(-1), "outlier"), c(np.int64(1), "inlier")])
    return score, decision, label  # type: ignore[return-value]


@register(IsolationForest, thresholds=_thresholds)
def convert_isolation_forest(graph: Graph, model: Any, x: Tensor) -> AnomalyScores:
    return AnomalyScores(*anomaly_scores(graph, model, x))


def export_anomaly(model: Any, n_features: int) -> bytes:
    """``model.onnx`` of an IsolationForest, or of a pipeline ending in one: input ``X`` (double
    ``[N, n_features]``), outputs ``score_samples``, ``decision`` and ``label``."""
    graph = Graph()
    forest, x = final_step(graph, model, Tensor("X", n_features))
    if not isinstance(forest, IsolationForest):
        raise ExportError(f"export_anomaly needs an IsolationForest; got {type(forest).__name__}")
    names: Sequence[str] = anomaly_scores(graph, forest, x)
    for name, out in zip(names, ANOMALY_OUTPUTS, strict=True):
        graph.rename(name, out)
    inputs = [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])]
    outputs = [helper.make_tensor_value_info(n, t, [None]) for n, t in
               zip(ANOMALY_OUTPUTS, (TensorProto.DOUBLE, TensorProto.DOUBLE, TensorProto.INT64), strict=True)]
    return graph.model(inputs, outputs, graph_name="tabserve_anomaly").SerializeToString()
