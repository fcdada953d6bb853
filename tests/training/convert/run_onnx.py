"""Run one fitted transformer through its exact converter and onnxruntime, for the converter tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper

from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import convert


def transform_onnx(fitted: Any, frame: pd.DataFrame) -> np.ndarray:
    """``fitted.transform`` as the exported graph computes it, on ``frame`` (text columns are strings)."""
    numeric = [c for c in frame.columns if frame[c].dtype != object]
    strings = [c for c in frame.columns if frame[c].dtype == object]
    num = Tensor("X", len(numeric)) if numeric else None
    cat = Tensor("X_cat", len(strings), "str") if strings else None
    columns = {c: (num, numeric.index(c)) if c in numeric else (cat, strings.index(c)) for c in frame.columns}
    graph = Graph()
    out = convert(graph, fitted, Table(num, cat, columns))  # type: ignore[arg-type]
    graph.op("Identity", [out.name], out="Y")
    inputs, feed = [], {}
    if num is not None:
        inputs.append(helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, num.width]))
        feed["X"] = frame[numeric].to_numpy(dtype=np.float64)
    if cat is not None:
        inputs.append(helper.make_tensor_value_info("X_cat", TensorProto.STRING, [None, cat.width]))
        feed["X_cat"] = frame[strings].to_numpy(dtype=object)
    model = graph.model(inputs, [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, out.width])])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["Y"], feed)[0]


def dense(values: Any) -> np.ndarray:
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values, dtype=np.float64)
