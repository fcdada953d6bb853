"""The exporter: one float32 X input, outputs named and typed exactly as the graph has them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import make_classification, make_regression

from tabserve.core.runtime import dtype_name
from tabserve.training import ESTIMATORS, export_onnx, make_pipeline


def _few_trees(estimator: str) -> dict[str, int]:
    return {} if estimator == "linear" else {"n_estimators": 3}


def _graph_outputs(onnx_bytes: bytes) -> list[tuple[str, str]]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return [(o.name, dtype_name(o.type)) for o in session.get_outputs()]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_regression_outputs(estimator):
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    pipeline = make_pipeline(estimator, "regression", 0, _few_trees(estimator))
    exported = export_onnx(pipeline.fit(X, y), 3, "regression")
    assert exported.input == {"name": "X", "dtype": "float32", "shape": [None, 3]}
    assert exported.outputs == [
        {"role": "prediction", "name": "variable", "dtype": "float32", "shape": [None, 1]}]
    assert _graph_outputs(exported.onnx_bytes) == [("variable", "float32")]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("labels", [np.array([3, 5, 7]), np.array(["a", "b", "c"], dtype=object)])
def test_classification_outputs(estimator, labels):
    X, y = make_classification(n_samples=90, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=0)
    pipeline = make_pipeline(estimator, "classification", 0, _few_trees(estimator))
    exported = export_onnx(pipeline.fit(X, labels[y]), 4, "classification")
    label_dtype = "int64" if labels.dtype.kind == "i" else "str"
    assert exported.outputs == [
        {"role": "label", "name": "label", "dtype": label_dtype, "shape": [None]},
        {"role": "probabilities", "name": "probabilities", "dtype": "float32", "shape": [None, 3]},
    ]
    assert _graph_outputs(exported.onnx_bytes) == [("label", label_dtype), ("probabilities", "float32")]


def test_export_is_reproducible():
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    pipeline = make_pipeline("random_forest", "regression", 0, {"n_estimators": 3}).fit(X, y)
    first, second = (export_onnx(pipeline, 3, "regression").onnx_bytes for _ in range(2))
    assert first == second


def test_unknown_estimator_and_parameter():
    with pytest.raises(ValueError, match="choose one of random_forest, extra_trees"):
        make_pipeline("svm", "regression", 0)
    with pytest.raises(ValueError, match="no parameter"):
        make_pipeline("linear", "regression", 0, {"n_estimators": 3})
