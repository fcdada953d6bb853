"""A tiny hand-built bundle with a categorical feature: prediction = size + weight (null -> 0) + code(color)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

import tabserve

COLOR_CODES = {"red": 10.0, "blue": 20.0}


def expected(size: float, color: str, weight: float | None) -> float:
    return size + (weight or 0.0) + COLOR_CODES[color]


def _graph() -> bytes:
    nodes = [
        helper.make_node("LabelEncoder", ["X_cat"], ["code32"], domain="ai.onnx.ml",
                         keys_strings=list(COLOR_CODES), values_floats=list(COLOR_CODES.values()),
                         default_float=0.0),
        helper.make_node("Cast", ["code32"], ["code"], to=TensorProto.DOUBLE),
        helper.make_node("IsNaN", ["X"], ["missing"]),
        helper.make_node("Where", ["missing", "zero", "X"], ["filled"]),
        helper.make_node("ReduceSum", ["filled", "axes"], ["numeric_sum"], keepdims=1),
        helper.make_node("Add", ["numeric_sum", "code"], ["prediction"]),
    ]
    graph = helper.make_graph(
        nodes, "shop",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 2]),
         helper.make_tensor_value_info("X_cat", TensorProto.STRING, [None, 1])],
        [helper.make_tensor_value_info("prediction", TensorProto.DOUBLE, [None, 1])],
        initializer=[helper.make_tensor("zero", TensorProto.DOUBLE, [], [0.0]),
                     helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_shop_bundle(dest: Path) -> Path:
    manifest = {
        "name": "shop", "version": "3", "task": "regression",
        "input": {"name": "X", "dtype": "float64", "shape": [None, 2]},
        "categorical_input": {"name": "X_cat", "dtype": "str", "shape": [None, 1]},
        "features": [
            {"name": "size", "dtype": "float64"},
            {"name": "color", "dtype": "str", "kind": "categorical", "categories": sorted(COLOR_CODES),
             "handle_unknown": "error"},
            {"name": "weight", "dtype": "float64", "allow_missing": True},
        ],
        "outputs": [{"name": "prediction", "dtype": "float64", "shape": [None, 1], "role": "prediction"}],
        "lineage": {"created_at": "2026-01-01T00:00:00Z"},
    }
    return tabserve.write_bundle(dest, _graph(), manifest)
