"""Conformance: the real tritonclient and kserve clients, unchanged, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from tritonclient.utils import InferenceServerException

from tabserve.protocol.tensors import datatype_for
from tests.protocol.bundles import expected, write_shop_bundle
from tests.servers import running_server

pytestmark = pytest.mark.slow

ROWS = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -0.5, 0.0, 2.0, 0.3]], dtype=np.float32)
IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def demo_server(demo_bundle):
    with running_server(str(demo_bundle), "--no-access-log") as base:
        yield base


@pytest.fixture(scope="module")
def iris_server(iris_bundle):
    with running_server(str(iris_bundle), "--no-access-log") as base:
        yield base


def output_name(model) -> str:
    return model.manifest.outputs[0].name


def triton_client(base: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(base.removeprefix("http://"), network_timeout=30)


def triton_input(name, array, datatype, binary):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- tritonclient -----------------------------------------------------------------------------------------------

def test_tritonclient_health_and_metadata(demo_server, demo_model):
    client = triton_client(demo_server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("demo") and client.is_model_ready("demo", demo_model.version)
    assert not client.is_model_ready("nope") and not client.is_model_ready("demo", "99")
    server = client.get_server_metadata()
    assert server["name"] == "tabserve" and {"binary_tensor_data", "model_repository"} <= set(server["extensions"])
    meta = client.get_model_metadata("demo", demo_model.version)
    assert meta["inputs"] == [{"name": "X", "datatype": datatype_for(demo_model.manifest.input.dtype),
                               "shape": [-1, 5]}]
    assert [o["name"] for o in meta["outputs"]] == [output_name(demo_model)]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    assert client.get_model_repository_index() == [{"name": "demo", "version": demo_model.version, "state": "READY"}]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [None, False, True])
def test_tritonclient_infer_json_and_binary(demo_server, demo_model, binary_in, binary_out):
    client = triton_client(demo_server)
    name = output_name(demo_model)
    outputs = None if binary_out is None else [triton.InferRequestedOutput(name, binary_data=binary_out)]
    result = client.infer("demo", [triton_input("X", ROWS, "FP32", binary_in)], outputs=outputs, request_id="t-1")
    np.testing.assert_array_equal(result.as_numpy(name).reshape(-1), demo_model.predict(ROWS))
    response = result.get_response()
    assert response["id"] == "t-1" and response["model_name"] == "demo"
    sent_binary = "binary_data_size" in response["outputs"][0].get("parameters", {})
    assert sent_binary == (binary_out is not False)  # tritonclient asks for binary outputs unless told otherwise


def test_tritonclient_per_feature_inputs_compression_and_errors(demo_server, demo_model):
    client = triton_client(demo_server)
    inputs = [triton_input(f"feature_{j}", ROWS[:, j].astype(np.float64), "FP64", j % 2 == 0) for j in range(5)]
    result = client.infer("demo", inputs, model_version=demo_model.version, request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy(output_name(demo_model)).reshape(-1), demo_model.predict(ROWS))
    with pytest.raises(InferenceServerException, match=r"\[400\] input 'X' has shape \[2, 4\] but the model "
                                                       r"expects \[rows, 5\]"):
        client.infer("demo", [triton_input("X", ROWS[:, :4], "FP32", True)])
    with pytest.raises(InferenceServerException, match=r"\[400\] unknown output 'nope'; the model's outputs are: "
                                                       + output_name(demo_model)):
        client.infer("demo", [triton_input("X", ROWS, "FP32", True)], outputs=[triton.InferRequestedOutput("nope")])
    bad = ROWS.copy()
    bad[0, 2] = np.nan
    with pytest.raises(InferenceServerException, match=r"\[400\] row 0, feature 'feature_2' \(column 2\): nan"):
        client.infer("demo", [triton_input("X", bad, "FP32", True)])
    with pytest.raises(InferenceServerException, match=r"\[404\] model 'demo' has no version '9'"):
        client.infer("demo", [triton_input("X", ROWS, "FP32", False)], model_version="9")


def test_tritonclient_classifier_labels_are_bytes(iris_server, iris_model):
    client = triton_client(iris_server)
    for binary in (False, True):
        label, proba = (o.name for o in iris_model.manifest.outputs)
        result = client.infer("iris", [triton_input("X", IRIS_ROWS, "FP32", binary)],
                              outputs=[triton.InferRequestedOutput(label, binary_data=binary),
                                       triton.InferRequestedOutput(proba, binary_data=binary)])
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(label).tolist()]
        assert labels == iris_model.predict(IRIS_ROWS).tolist()
        np.testing.assert_array_equal(result.as_numpy(proba), iris_model.predict_proba(IRIS_ROWS))


def test_tritonclient_bytes_inputs_for_categorical_features(tmp_path):
    bundle = write_shop_bundle(tmp_path / "shop")
    with running_server(str(bundle), "--no-access-log") as base:
        client = triton_client(base)
        numeric = np.array([[1.0, 2.0], [1.5, np.nan]])
        colors = np.array([["red"], ["blue"]], dtype=object)
        for binary in (False, True):
            inputs = [triton_input("X", numeric, "FP64", True), triton_input("X_cat", colors, "BYTES", binary)]
            result = client.infer("shop", inputs)
            assert result.as_numpy("prediction").reshape(-1).tolist() == [expected(1.0, "red", 2.0),
                                                                           expected(1.5, "blue", None)]
        with pytest.raises(InferenceServerException, match="unknown category 'green'"):
            client.infer("shop", [triton_input("X", numeric, "FP64", True),
                                  triton_input("X_cat", np.array([["red"], ["green"]], dtype=object), "BYTES", True)])


def test_tritonclient_repository_unload_and_load(demo_bundle, tmp_path):
    bundle = tmp_path / "demo"
    shutil.copytree(demo_bundle, bundle)
    with running_server(str(bundle), "--no-access-log", env={"TABSERVE_ADMIN_ROUTES": "on"}) as base:
        client = triton_client(base)
        client.unload_model("demo")
        assert not client.is_model_ready("demo") and not client.is_server_ready()
        assert client.get_model_repository_index()[0]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException, match=r"\[503\] model 'demo' was unloaded"):
            client.infer("demo", [triton_input("X", ROWS, "FP32", True)])
        client.load_model("demo")
        assert client.is_model_ready("demo")
        (bundle / "model.onnx").write_bytes(b"not onnx")
        with pytest.raises(InferenceServerException, match=r"\[400\] loading model 'demo' .* failed: .*sha256"):
            client.load_model("demo")
        assert client.is_model_ready("demo")  # the served version stays
        with pytest.raises(InferenceServerException, match=r"\[404\] unknown model 'nope'"):
            client.load_model("nope")


# -- kserve ---------------------------------------------------------------------------------------------------

def kserve_input(name, array, datatype, binary):
    tensor = InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_kserve_rest_client_health_and_infer(demo_server, demo_model):
    async def scenario():
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
            assert await client.is_server_live(demo_server) is True
            assert await client.is_server_ready(demo_server) is True
            assert await client.is_model_ready(demo_server, "demo") is True
            assert await client.is_model_ready(demo_server, "nope") is False
            answers = []
            for binary in (False, True):
                request = InferRequest("demo", [kserve_input("X", ROWS, "FP32", binary)], request_id=f"k-{binary}",
                                       parameters={"binary_data_output": binary})
                response = await client.infer(demo_server, request, model_name="demo")
                assert response.id == f"k-{binary}" and response.model_name == "demo"
                answers.append(response.outputs[0].as_numpy().reshape(-1))
            bad = InferRequest("demo", [kserve_input("X", ROWS[:, :3], "FP32", False)])
            with pytest.raises(httpx.HTTPStatusError, match=r"input 'X' has shape \[2, 3\].*'400 Bad Request'"):
                await client.infer(demo_server, bad, model_name="demo")
            return answers

    for values in asyncio.run(scenario()):
        np.testing.assert_array_equal(values, demo_model.predict(ROWS))


def test_kserve_rest_client_classifier_outputs(iris_server, iris_model):
    async def scenario():
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
            label_name, proba_name = (o.name for o in iris_model.manifest.outputs)
            request = InferRequest("iris", [kserve_input("X", IRIS_ROWS, "FP32", True)],
                                   request_outputs=[RequestedOutput(label_name, {"binary_data": True}),
                                                    RequestedOutput(proba_name)])
            return await client.infer(iris_server, request, model_name="iris")

    response = asyncio.run(scenario())
    label, proba = response.outputs
    labels = [v.decode() if isinstance(v, bytes) else v for v in label.as_numpy().tolist()]
    assert labels == iris_model.predict(IRIS_ROWS).tolist()
    want = iris_model.predict_proba(IRIS_ROWS)
    np.testing.assert_array_equal(np.array(proba.data, dtype=want.dtype).reshape(2, 3), want)
