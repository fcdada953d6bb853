"""Conformance: tritonclient.grpc and KServe's InferenceGRPCClient, unchanged, against a real server; every answer
equals REST v2's for the same rows, bit for bit."""

from __future__ import annotations

import pytest

from tests.grpc.conftest import rest_infer, run_client

pytestmark = pytest.mark.slow

DEMO = [{"name": "X", "datatype": "FP64", "shape": [2, 5],
         "data": [[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -0.5, 0.0, 2.0, 1e-300]]}]
IRIS = [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}]
# The categorical model: its own two tensors, and one tensor per feature (BYTES for the text one).
SHOP_TENSORS = [{"name": "X", "datatype": "FP64", "shape": [3, 2], "data": [[1.5, 2.0], [3.0, 0.25], [7.0, 1.0]]},
                {"name": "X_cat", "datatype": "BYTES", "shape": [3, 1], "data": [["red"], ["blue"], ["red"]]}]
SHOP_COLUMNS = [{"name": "size", "datatype": "FP64", "shape": [2], "data": [1.5, 3.0]},
                {"name": "color", "datatype": "BYTES", "shape": [2], "data": ["blue", "red"]},
                {"name": "weight", "datatype": "FP64", "shape": [2], "data": [2.0, 0.5]}]


def test_tritonclient_health_metadata_and_index(server):
    answer = run_client({"client": "triton", "call": "health", "url": server[1], "model": "demo"})
    assert answer["live"] and answer["ready"] and answer["model_ready"]
    assert answer["server"]["name"] == "tabserve"
    assert {"binary_tensor_data", "model_repository"} <= set(answer["server"]["extensions"])
    meta = answer["metadata"]
    assert meta["name"] == "demo" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP64", "shape": ["-1", "5"]}]
    assert {(m["name"], m["state"]) for m in answer["index"]["models"]} == {
        ("demo", "READY"), ("iris", "READY"), ("shop", "READY")}


@pytest.mark.parametrize(("model", "inputs"), [("demo", DEMO), ("iris", IRIS), ("shop", SHOP_TENSORS),
                                               ("shop", SHOP_COLUMNS)],
                         ids=["demo-fp64", "iris-labels", "shop-model-tensors", "shop-feature-tensors"])
def test_tritonclient_infer_equals_rest(server, model, inputs):
    answer = run_client({"client": "triton", "call": "infer", "url": server[1], "model": model, "inputs": inputs})
    assert answer["raw"] and answer["id"] == "t-1"  # tritonclient sends raw_input_contents: raw outputs back
    assert answer["outputs"] == rest_infer(server[0], model, inputs)["outputs"]


def test_tritonclient_shop_values(server):
    answer = run_client({"client": "triton", "call": "infer", "url": server[1], "model": "shop",
                         "inputs": SHOP_COLUMNS})
    import base64

    import numpy as np

    values = np.frombuffer(base64.b64decode(answer["outputs"]["prediction"]["values"]), dtype="<f8")
    np.testing.assert_array_equal(values, [1.5 + 2.0 + 20.0, 3.0 + 0.5 + 10.0])


@pytest.mark.parametrize("raw", [False, True], ids=["typed-contents", "raw-contents"])
@pytest.mark.parametrize(("model", "inputs"), [("demo", DEMO), ("iris", IRIS), ("shop", SHOP_TENSORS)],
                         ids=["demo-fp64", "iris-labels", "shop"])
def test_kserve_infer_equals_rest(server, model, inputs, raw):
    inputs = [{**spec, "raw": raw} for spec in inputs]
    answer = run_client({"client": "kserve", "call": "infer", "url": server[1], "model": model, "inputs": inputs})
    assert answer["raw"] is raw and answer["id"] == "k-1"  # typed contents in, typed contents out
    assert answer["outputs"] == rest_infer(server[0], model, inputs)["outputs"]


def test_kserve_health(server):
    answer = run_client({"client": "kserve", "call": "health", "url": server[1], "model": "iris"})
    assert answer == {"live": True, "ready": True, "model_ready": True}


@pytest.mark.parametrize("call", ["infer", "health"])
def test_tritonclient_unknown_model_is_not_found(server, call):
    answer = run_client({"client": "triton", "call": call, "url": server[1], "model": "nope", "inputs": DEMO})
    assert answer["error"][0] == "StatusCode.NOT_FOUND"  # as REST's 404: ModelReady too
    assert "unknown model 'nope'" in answer["error"][1]
