"""Exact export: any registered model or pipeline -> one ONNX graph that reproduces it in double precision.

Inputs: ``X`` (double ``[N, F_num]``, the numeric features) and/or ``X_cat`` (string ``[N, F_cat]``).
Outputs: regression ``prediction`` (double ``[N]``); classification ``label`` (int64 or string ``[N]``)
and ``probabilities`` (double ``[N, K]``), or, for a classifier without probabilities, ``decision`` (its
``decision_function``, not listed in the manifest: the server answers labels only); anomaly (an
IsolationForest) ``label`` (int64 ``[N]``, -1 outlier / 1 inlier), ``score`` (``score_samples``) and
``decision`` (``decision_function``, double ``[N]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, helper

from tabserve.core.manifest import Task
from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import AnomalyScores, ClassScores, Prediction, convert

NUMERIC_INPUT = "X"
CATEGORICAL_INPUT = "X_cat"
EXPORTER = "tabserve exact exporter"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """``allow_missing``: the feature may be NaN (the manifest's ``allow_missing``); where it may not, the
    server refuses NaN, and trees need not route it as the model would (one fewer step per row)."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    allow_missing: bool = True


@dataclass(frozen=True, slots=True)
class ExactExport:
    onnx_bytes: bytes
    input: dict[str, Any] | None  # the manifest's ``input``
    categorical_input: dict[str, Any] | None  # the manifest's ``categorical_input``
    outputs: list[dict[str, Any]]  # the manifest's ``outputs``
    exporter: str = EXPORTER


def export_exact(model: Any, features: Sequence[FeatureSpec], task: Task) -> ExactExport:
    graph = Graph()
    table, inputs, specs = _head(features)
    result = convert(graph, model, table)
    outputs, manifest_outputs = _tail(graph, result, task)
    onnx_model = graph.model(inputs, outputs)
    return ExactExport(onnx_model.SerializeToString(), specs.get("numeric"), specs.get("categorical"),
                       manifest_outputs)


def _head(features: Sequence[FeatureSpec]) -> tuple[Table, list[Any], dict[str, dict[str, Any]]]:
    numeric = [f.name for f in features if f.kind == "numeric"]
    categorical = [f.name for f in features if f.kind == "categorical"]
    nan = tuple(f.allow_missing for f in features if f.kind == "numeric")
    num = Tensor(NUMERIC_INPUT, len(numeric), nan=nan) if numeric else None
    cat = Tensor(CATEGORICAL_INPUT, len(categorical), "str") if categorical else None
    columns: dict[str, tuple[Tensor, int]] = {}
    positions = {n: i for i, n in enumerate(numeric)} | {n: i for i, n in enumerate(categorical)}
    for f in features:
        columns[f.name] = (num if f.kind == "numeric" else cat, positions[f.name])  # type: ignore[assignment]
    inputs, specs = [], {}
    if num is not None:
        inputs.append(helper.make_tensor_value_info(num.name, TensorProto.DOUBLE, [None, num.width]))
        specs["numeric"] = {"name": num.name, "dtype": "float64", "shape": [None, num.width]}
    if cat is not None:
        inputs.append(helper.make_tensor_value_info(cat.name, TensorProto.STRING, [None, cat.width]))
        specs["categorical"] = {"name": cat.name, "dtype": "str", "shape": [None, cat.width]}
    return Table(num, cat, columns), inputs, specs


def _tail(graph: Graph, result: Any, task: Task) -> tuple[list[Any], list[dict[str, Any]]]:
    if isinstance(result, AnomalyScores):
        if task != "anomaly":
            raise ExportError(f"the model ends in an anomaly detector; a {task} export needs a {task} model at "
                              "the end (import it as it is: its bundle has the task 'anomaly')")
        return _anomaly_tail(graph, result)
    if task == "anomaly":
        raise ExportError(f"an anomaly export needs an anomaly detector at the end; got {type(result).__name__}")
    if task == "regression":
        if not isinstance(result, Prediction):
            raise ExportError(f"a regression export needs a regressor at the end; got {type(result).__name__}")
        if result.flat and graph.produces(result.values):
            graph.rename(result.values, "prediction")
        else:
            flat = graph.const(np.array([-1], dtype=np.int64), "flat")
            graph.op("Reshape", [result.values, flat], out="prediction")
        return ([helper.make_tensor_value_info("prediction", TensorProto.DOUBLE, [None])],
                [{"role": "prediction", "name": "prediction", "dtype": "float64", "shape": [None]}])
    if not isinstance(result, ClassScores):
        raise ExportError(f"a classification export needs a classifier at the end; got {type(result).__name__}")
    classes = np.asarray(result.classes)
    string_labels = classes.dtype.kind in "OUS"
    if string_labels:
        label_values = np.array([str(c) for c in classes], dtype=object)
        label_type, label_dtype = TensorProto.STRING, "str"
    else:
        label_values = classes.astype(np.int64)
        if not np.array_equal(label_values, classes):
            raise ExportError(f"class labels must be integers or strings; got {classes.tolist()!r}")
        label_type, label_dtype = TensorProto.INT64, "int64"
    index = graph.op("ArgMax", [result.decision or result.probabilities], axis=1, keepdims=0,
                     select_last_index=int(result.ties == "last"))
    if label_type == TensorProto.INT64 and np.array_equal(label_values, np.arange(len(label_values))):
        graph.rename(index, "label")  # classes 0..K-1: the index is the label
    else:
        graph.op("Gather", [graph.const(label_values, "classes"), index], axis=0, out="label")
    label = helper.make_tensor_value_info("label", label_type, [None])
    label_spec = {"role": "label", "name": "label", "dtype": label_dtype, "shape": [None]}
    if result.probabilities is None:
        return [label, *_decision_output(graph, result)], [label_spec]
    if graph.produces(result.probabilities):  # name the output where it is computed: no Identity to run
        graph.rename(result.probabilities, "probabilities")
    else:
        graph.op("Identity", [result.probabilities], out="probabilities")
    k = len(classes)
    return ([label, helper.make_tensor_value_info("probabilities", TensorProto.DOUBLE, [None, k])],
            [label_spec,
             {"role": "probabilities", "name": "probabilities", "dtype": "float64", "shape": [None, k]}])


def _anomaly_tail(graph: Graph, result: AnomalyScores) -> tuple[list[Any], list[dict[str, Any]]]:
    outputs, specs = [], []
    for role, value, onnx_type, dtype in (("label", result.label, TensorProto.INT64, "int64"),
                                          ("score", result.score, TensorProto.DOUBLE, "float64"),
                                          ("decision", result.decision, TensorProto.DOUBLE, "float64")):
        graph.rename(value, role)
        outputs.append(helper.make_tensor_value_info(role, onnx_type, [None]))
        specs.append({"role": role, "name": role, "dtype": dtype, "shape": [None]})
    return outputs, specs


def _decision_output(graph: Graph, result: ClassScores) -> list[Any]:
    """A classifier without probabilities: its ``decision_function`` as the graph output ``decision``
    (``[N]`` binary, ``[N, K]``), for whoever runs model.onnx; the server answers labels only."""
    if result.scores is None:
        return []
    binary = len(result.classes) == 2
    if binary:
        graph.op("Reshape", [result.scores, graph.const(np.array([-1], dtype=np.int64), "flat")], out="decision")
    else:
        graph.op("Identity", [result.scores], out="decision")
    shape = [None] if binary else [None, len(result.classes)]
    return [helper.make_tensor_value_info("decision", TensorProto.DOUBLE, shape)]


__all__ = ["AnomalyScores", "ClassScores", "ExactExport", "FeatureSpec", "Graph", "Prediction", "Table", "Tensor", "export_exact"]
