"""What a gRPC client sees when a request is wrong: REST v2's messages as gRPC status codes and details."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest

from tabserve.grpc import inference_pb2 as pb
from tests.grpc.conftest import fp64, infer_request

pytestmark = pytest.mark.slow

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


def rpc_error(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30, **kwargs)
    return caught.value


def rest_error(base: str, model: str, body: dict) -> tuple[int, str]:
    r = httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=30)
    return r.status_code, r.json()["error"]


@pytest.mark.parametrize(("inputs", "expected_status"), [
    ([{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": ROW[:4]}], 400),  # one feature short
    ([{"name": "X", "datatype": "BYTES", "shape": [1, 5], "data": ["a"] * 5}], 400),  # text for numbers
    ([{"name": "X", "datatype": "FP64", "shape": [0, 5], "data": []}], 400),  # no rows
    ([{"name": "x0", "datatype": "FP64", "shape": [1], "data": [1.0]}], 400),  # unknown/missing feature inputs
    ([{"name": "X", "datatype": "FP99", "shape": [1, 5], "data": ROW}], 400),  # unknown datatype
])
def test_invalid_input_has_rest_v2s_message(server, stub, inputs, expected_status):
    status, message = rest_error(server[0], "demo", {"inputs": inputs})
    assert status == expected_status
    request = pb.ModelInferRequest(model_name="demo")
    for spec in inputs:
        t = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
        if spec["datatype"] == "BYTES":
            t.contents.bytes_contents.extend(v.encode() for v in spec["data"])
        else:
            t.contents.fp64_contents.extend(spec["data"])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


def test_unknown_output_and_model_and_version(server, stub):
    request = infer_request("demo", X=("FP64", [1, 5], ROW))
    request.outputs.add(name="nope")
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown output 'nope'" in error.details()
    error = rpc_error(stub.ModelInfer, infer_request("nope", X=("FP64", [1, 5], ROW)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == rest_error(server[0], "nope", {"inputs": []})[1]
    request = infer_request("demo", X=("FP64", [1, 5], ROW))
    request.model_version = "99"
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "99" in error.details()
    assert rpc_error(stub.ModelInfer, infer_request("", X=("FP64", [1, 5], ROW))).code() == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_typed_contents_in_the_wrong_field_are_named(stub):
    request = infer_request("demo", X=("FP32", [1, 5], ROW))
    request.inputs[0].datatype = "FP64"  # values in fp32_contents, datatype FP64
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("input 'X': shape [1, 5] holds 5 elements but fp64_contents has 0 (its values are "
                               "in fp32_contents); a FP64 input sends its values in fp64_contents")


def test_raw_contents_must_match_the_inputs(stub):
    request = infer_request("demo", X=("FP64", [1, 5], []))
    request.raw_input_contents.append(fp64(ROW)[:4].tobytes())
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [1, 5] holds 5 elements" in error.details()
    request.raw_input_contents.append(b"")
    assert "2 raw_input_contents" in rpc_error(stub.ModelInfer, request).details()


def test_pinned_version_request_id_and_raw_output(server, stub):
    version = stub.ModelMetadata(pb.ModelMetadataRequest(name="demo"), timeout=30).versions[0]
    request = infer_request("demo", X=("FP64", [2, 5], []))
    request.raw_input_contents.append(fp64([ROW, ROW]).tobytes())
    request.model_version = version
    request.id = "mine"
    response, call = stub.ModelInfer.with_call(request, timeout=30, metadata=[("x-request-id", "req-42")])
    assert (response.model_version, response.id) == (version, "mine")
    assert ("x-request-id", "req-42") in call.trailing_metadata()
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f8")
    rest = httpx.post(f"{server[0]}/v2/models/demo/versions/{version}/infer", timeout=30, json={
        "inputs": [{"name": "X", "datatype": "FP64", "shape": [2, 5], "data": [ROW, ROW]}]}).json()
    assert values.tolist() == rest["outputs"][0]["data"]


def test_message_over_max_body_bytes_is_resource_exhausted(stub):
    request = infer_request("demo", X=("FP64", [1, 5], ROW))
    request.raw_input_contents.append(b"\0" * (16 * 1024 * 1024 + 1))  # the default max_body_bytes: 16 MiB
    assert rpc_error(stub.ModelInfer, request).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unloaded_model_is_unavailable_with_retry_after_then_loads_again(stub):
    assert stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="shop"), timeout=30).isUnloaded
    try:
        request = infer_request("shop", X=("FP64", [1, 2], [1.0, 2.0]), X_cat=("BYTES", [1, 1], [b"red"]))
        error = rpc_error(stub.ModelInfer, request)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert ("retry-after", "1") in error.trailing_metadata()
        assert not stub.ModelReady(pb.ModelReadyRequest(name="shop"), timeout=30).ready
        index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30)
        assert {(m.name, m.state) for m in index.models} >= {("shop", "UNAVAILABLE")}
    finally:
        # KServe's field layout: the name in field 1 (Triton's repository_name)
        loaded = stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(repository_name="shop"), timeout=60)
    assert loaded.isLoaded and loaded.model_name == "shop"
    response = stub.ModelInfer(request, timeout=30)
    assert list(response.outputs[0].contents.fp64_contents) == [1.0 + 2.0 + 10.0]


def test_grpc_calls_are_counted_with_protocol_grpc(server, stub):
    stub.ModelInfer(infer_request("demo", X=("FP64", [1, 5], ROW)), timeout=30)
    text = httpx.get(f"{server[0]}/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith("tabserve_requests_total{")
             and 'route="/inference.GRPCInferenceService/ModelInfer"' in line and 'model="demo"' in line
             and 'status="200"' in line]
    assert lines and all('protocol="grpc"' in line for line in lines)


def test_a_long_message_arrives_shortened_not_as_a_transport_error(stub):
    request = pb.ModelInferRequest(model_name="demo")
    for i in range(3000):  # REST's message lists every unknown input: ~50 KB, past gRPC's 8 KiB metadata limit
        request.inputs.add(name=f"unknown_input_{i}", datatype="FP64", shape=[1]).contents.fp64_contents.append(0.0)
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("unknown input(s) 'unknown_input_0', 'unknown_input_1'")
    assert len(error.details()) < 8192
