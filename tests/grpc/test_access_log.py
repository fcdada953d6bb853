"""One JSON access-log line per gRPC call, as REST writes them, with ``protocol: grpc``."""

from __future__ import annotations

import json
from datetime import datetime

import grpc
import pytest

from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import grpc_server, infer_request
from tests.servers import running_server


def test_each_call_writes_one_access_line(demo_bundle):
    with grpc_server(str(demo_bundle)) as (_, address), grpc.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        stub.ModelInfer(infer_request("demo", X=("FP64", [1, 5], [0.1, 0.2, 0.3, 0.4, 0.5])), timeout=30,
                        metadata=[("x-request-id", "line-1")])
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(infer_request("nope", X=("FP64", [1, 5], [0.1] * 5)), timeout=30,
                            metadata=[("x-request-id", "line-2")])
    lines = [json.loads(line) for line in running_server.last_output.splitlines() if '"request_id":"line-' in line]
    assert [(x["request_id"], x["status"], x["model"]) for x in lines] == [("line-1", 200, "demo"),
                                                                           ("line-2", 404, None)]
    for line in lines:
        assert (line["method"], line["route"], line["protocol"]) == (
            "GRPC", "/inference.GRPCInferenceService/ModelInfer", "grpc")
        assert line["latency_ms"] >= 0
        assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None  # UTC, "Z"
    assert lines[0]["model_version"] and lines[1]["model_version"] is None
