"""What a meta-estimator reads from its fitted members: their outputs as graph values, as scikit-learn does.

A member is converted by its own registered converter (``registry.convert``), so any supported estimator or
pipeline can sit inside a meta-estimator. These helpers turn a member's ``Prediction`` or ``ClassScores``
into what the meta-estimator's source reads (``predict`` as a column, the label's class position,
``predict_proba``, ``decision_function``) and add values up in the order scikit-learn adds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.pipeline import Pipeline

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import decision as linear_decision
from tabserve.training.convert.registry import ClassScores, Prediction, convert, lookup


def regressor_column(graph: Graph, member: Any, x: Tensor, who: str) -> str:
    """The member's ``predict`` as ``[N, 1]`` double."""
    result = convert(graph, member, x)
    if not isinstance(result, Prediction):
        raise ExportError(f"{who} expects regressors; {type(member).__name__} is not one")
    return column(graph, result)


def column(graph: Graph, result: Prediction) -> str:
    if not result.flat:
        return result.values
    return graph.op("Unsqueeze", [result.values, graph.const(np.array([1], np.int64), "axes")])  # type: ignore[return-value]


def classifier_scores(graph: Graph, member: Any, x: Tensor, who: str) -> ClassScores:
    result = convert(graph, member, x)
    if not isinstance(result, ClassScores):
        raise ExportError(f"{who} expects classifiers; {type(member).__name__} is not one")
    return result


def final_step(graph: Graph, member: Any, x: Tensor) -> tuple[Any, Tensor]:
    """A pipeline's last step and its input (the other steps converted), a frozen estimator's estimator;
    anything else as it is."""
    while isinstance(member, Pipeline | FrozenEstimator):
        if isinstance(member, FrozenEstimator):
            member = member.estimator
            continue
        steps = [s for _, s in member.steps if s is not None and s != "passthrough"]
        for step in steps[:-1]:
            x = convert(graph, step, x)
        member = steps[-1]
    return member, x


def label_index(graph: Graph, scores: ClassScores) -> str:
    """``[N]`` int64: the position in ``scores.classes`` of the member's ``predict``."""
    source = scores.decision or scores.probabilities
    assert source is not None
    return graph.op("ArgMax", [source], axis=1, keepdims=0,  # type: ignore[return-value]
                    select_last_index=int(scores.ties == "last"))


def positions(member_classes: Sequence[Any], classes: Sequence[Any], who: str) -> np.ndarray:
    """Where each class of a member sits among the meta-estimator's classes."""
    where = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    found = [where.get(c) for c in np.asarray(member_classes).tolist()]
    if any(i is None for i in found):
        raise ExportError(f"{who}: a member knows classes {list(member_classes)!r} outside {list(classes)!r}")
    return np.array(found, dtype=np.int64)


def one_hot(graph: Graph, index: str, k: int, value: float = 1.0) -> str:
    """``[N]`` class positions -> ``[N, K]`` double: ``value`` at the position, 0 elsewhere."""
    expanded = graph.op("Unsqueeze", [index, graph.const(np.array([1], np.int64), "axes")])
    hit = graph.op("Equal", [expanded, graph.const(np.arange(k, dtype=np.int64), "class_positions")])
    if value == 1.0:
        return graph.cast(hit, TensorProto.DOUBLE)
    return graph.op("Where", [hit, graph.const(np.float64(value), "weight"),  # type: ignore[return-value]
                              graph.const(np.float64(0.0), "zero")])


def spread(graph: Graph, values: str, where: np.ndarray, k: int) -> str:
    """``[N, k_member]`` -> ``[N, K]``: column ``j`` moved to ``where[j]``, zeros in the others (a member
    that saw fewer classes). A product by a 0/1 matrix: each output is one value plus exact zeros."""
    if len(where) == k and np.array_equal(where, np.arange(k)):
        return values
    matrix = np.zeros((len(where), k))
    matrix[np.arange(len(where)), where] = 1.0
    return graph.op("MatMul", [values, graph.const(matrix, "spread")])  # type: ignore[return-value]


def in_order(graph: Graph, terms: Sequence[str]) -> str:
    """``((t0 + t1) + t2) + ...``: a Python ``sum`` or a numpy reduction over an outer axis."""
    total = terms[0]
    for term in terms[1:]:
        total = graph.op("Add", [total, term])  # type: ignore[assignment]
    return total


_RAW_SCORES = ("GradientBoostingClassifier", "HistGradientBoostingClassifier")


def decision_function(graph: Graph, member: Any, scores: ClassScores, x: Tensor, who: str) -> str:
    """The member's ``decision_function``: ``[N, 1]`` binary, ``[N, K]``. Converters give it as ``scores``
    for classifiers without probabilities; a linear model's is ``X @ coef_.T + intercept_``; scikit-learn's
    gradient boosting classifiers give their raw scores as ``decision``."""
    values = scores.scores
    if values is None:
        member, x = final_step(graph, member, x)
    if values is None and isinstance(member, LinearClassifierMixin):
        values = linear_decision(graph, x, member.coef_, member.intercept_)
    if (values is None and type(member).__name__ in _RAW_SCORES and scores.decision is not None
            and getattr(member, "loss", "log_loss") == "log_loss"):
        # scikit-learn's boosters label by their raw scores (sklearn_trees): [N, K] as they are, binary as
        # [-raw, 0] (log_loss), whose first column negated is raw exactly (a sign flip rounds nothing)
        values = scores.decision
        if len(scores.classes) == 2:
            first = graph.op("Slice", [values, graph.const(np.array([0], np.int64), "start"),
                                       graph.const(np.array([1], np.int64), "end"),
                                       graph.const(np.array([1], np.int64), "axis")])
            values = graph.op("Neg", [first])  # type: ignore[assignment]
    if values is None:
        raise ExportError(f"{who}: the decision_function of {type(member).__name__} cannot be exported; "
                          "use predict_proba (stack_method='predict_proba' or 'auto')")
    if len(scores.classes) == 2:
        return graph.op("Reshape", [values, graph.const(np.array([-1, 1], np.int64), "column")])  # type: ignore[return-value]
    return values


def columns_of(graph: Graph, x: Tensor, features: Iterable[int]) -> Tensor:
    """``X[:, features]`` (a member fitted on some columns); ``x`` itself when it is every column in order."""
    features = np.asarray(list(features), dtype=np.int64)
    if np.array_equal(features, np.arange(x.width)):
        return x
    name = graph.op("Gather", [x.name, graph.const(features, "features")], axis=1)
    nan = None if x.nan is None else tuple(x.nan[i] for i in features)
    return Tensor(name, len(features), x.dtype, nan=nan)  # type: ignore[arg-type]


def member_thresholds(members: Iterable[tuple[Any, Sequence[int] | None]]) -> dict[int, np.ndarray]:
    """The split thresholds of every member that has them, per input column of the meta-estimator
    (``features``: the member's columns, None for all)."""
    found: dict[int, list[np.ndarray]] = {}
    for member, features in members:
        thresholds = lookup(member).thresholds
        if thresholds is None:
            continue
        for col, values in thresholds(member).items():
            column_ = int(col) if features is None else int(features[int(col)])
            found.setdefault(column_, []).append(np.asarray(values))
    return {c: np.unique(np.concatenate(v)) for c, v in sorted(found.items())}


__all__ = ["classifier_scores", "column", "columns_of", "decision_function", "final_step", "in_order",
           "label_index", "member_thresholds", "one_hot", "positions", "regressor_column", "spread"]
