"""The exporter: float64 X (and string X_cat) inputs, outputs named and typed exactly as the graph has them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import make_classification, make_regression

from tabserve.core.runtime import dtype_name
from tabserve.errors import ExportError
from tabserve.training import ESTIMATORS, export_onnx, make_pipeline
from tabserve.training.export import export_skl2onnx


def _few_trees(estimator: str) -> dict[str, int]:
    return {"n_estimators": 3} if estimator in ("random_forest", "extra_trees", "gradient_boosting") else (
        {"max_iter": 3} if estimator == "hist_gradient_boosting" else {})


def _graph_io(onnx_bytes: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return ([(i.name, dtype_name(i.type)) for i in session.get_inputs()],
            [(o.name, dtype_name(o.type)) for o in session.get_outputs()])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_regression_outputs(estimator):
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    pipeline = make_pipeline(estimator, "regression", 0, _few_trees(estimator))
    exported = export_onnx(pipeline.fit(X, y), 3, "regression")
    assert exported.input == {"name": "X", "dtype": "float64", "shape": [None, 3]}
    assert exported.categorical_input is None
    assert exported.outputs == [{"role": "prediction", "name": "prediction", "dtype": "float64", "shape": [None]}]
    assert _graph_io(exported.onnx_bytes) == ([("X", "float64")], [("prediction", "float64")])
    assert exported.exporter.startswith("tabserve-exact ")


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
        {"role": "probabilities", "name": "probabilities", "dtype": "float64", "shape": [None, 3]},
    ]
    assert _graph_io(exported.onnx_bytes)[1] == [("label", label_dtype), ("probabilities", "float64")]


def test_export_is_reproducible():
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    pipeline = make_pipeline("random_forest", "regression", 0, {"n_estimators": 3}).fit(X, y)
    first, second = (export_onnx(pipeline, 3, "regression").onnx_bytes for _ in range(2))
    assert first == second


def test_a_model_without_an_exact_converter_is_refused_with_the_supported_list():
    from sklearn.gaussian_process import GaussianProcessRegressor

    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    with pytest.raises(ExportError, match=r"no exact ONNX converter for GaussianProcessRegressor; supported: .*SVR"):
        export_onnx(GaussianProcessRegressor().fit(X, y), 3, "regression")


def test_the_skl2onnx_fallback_is_float32_and_close():
    from sklearn.svm import SVR

    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    model = SVR().fit(X, y)
    exported = export_skl2onnx(model, 3, "regression")
    assert exported.input == {"name": "X", "dtype": "float32", "shape": [None, 3]}
    assert exported.exporter.startswith("skl2onnx ")
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    out = session.run(None, {"X": X.astype(np.float32)})[0].ravel()
    np.testing.assert_allclose(out, model.predict(X.astype(np.float32).astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_unknown_estimator_and_parameter():
    with pytest.raises(ValueError, match="choose one of random_forest, extra_trees"):
        make_pipeline("svm", "regression", 0)
    with pytest.raises(ValueError, match="no parameter"):
        make_pipeline("linear", "regression", 0, {"n_estimators": 3})
