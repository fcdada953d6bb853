"""One row of FP64 features in ``raw_input_contents`` (tritonclient's usual call, which the codec answers the
short way) answers as REST v2 does: the value bit for bit, the request id, the range warnings, and a
non-finite value's message."""

from __future__ import annotations

import grpc
import httpx
import orjson
import pytest

from tabserve.grpc import inference_pb2 as pb
from tests.grpc.conftest import fp64, infer_request

pytestmark = pytest.mark.slow

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
OUT_OF_RANGE = [1e6, -1e6, 0.3, 0.4, 0.5]


def one_raw_row(values: list[float], **fields: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="demo", **fields)
    request.inputs.add(name="X", datatype="FP64", shape=[1, 5])
    request.raw_input_contents.append(fp64([values]).tobytes())
    return request


@pytest.mark.parametrize("values", [ROW, OUT_OF_RANGE])
def test_one_raw_row_equals_rest_v2(server, stub, values):
    r = httpx.post(f"{server[0]}/v2/models/demo/infer", timeout=30, json={
        "id": "row-1", "inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 5], "data": values}],
        "parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:size])
    assert ("warnings" in header.get("parameters", {})) == (values is OUT_OF_RANGE)

    response = stub.ModelInfer(one_raw_row(values, id="row-1"), timeout=30)
    assert (response.model_name, response.model_version, response.id) == ("demo", header["model_version"], "row-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == \
        [(o["name"], o["datatype"], o["shape"]) for o in header["outputs"]]
    assert b"".join(response.raw_output_contents) == r.content[size:]
    assert {k: v.string_param for k, v in response.parameters.items()} == header.get("parameters", {})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_raw_value_has_the_typed_calls_message(stub, bad):
    values = [0.1, bad, 0.3, 0.4, 0.5]
    typed = rpc_details(stub, infer_request("demo", X=("FP64", [1, 5], values)))
    assert "finite numbers are required" in typed
    assert rpc_details(stub, one_raw_row(values)) == typed


def rpc_details(stub, request: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details()
