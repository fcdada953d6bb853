"""A/B variants and shadow copies over gRPC: the same traffic policy as REST, the sticky key from metadata."""

from __future__ import annotations

import time

import grpc
import httpx
import numpy as np
import pytest

from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import grpc_server, infer_request
from tests.lifecycle.conftest import ROWS, versions  # noqa: F401 - the fixture: versions 1 and 2 of demo
from tests.observability.scrape import total

pytestmark = pytest.mark.slow


def test_ab_variants_follow_the_sticky_key_and_shadow_copies_are_scored(versions, tmp_path):  # noqa: F811
    folder = versions.model_dir(tmp_path, "1", "2")  # version 2 is the primary
    with grpc_server(str(folder), "--ab", "1=50", "--shadow", "1", "--no-access-log") as (base, address), \
            grpc.insecure_channel(address) as channel:
        stub = GRPCInferenceServiceStub(channel)
        seen = {}
        for user in (f"user-{i}" for i in range(16)):
            request = infer_request("demo", X=("FP64", [3, 5], [v for row in ROWS for v in row]))
            response, call = stub.ModelInfer.with_call(request, timeout=30, metadata=[("x-tabserve-key", user)])
            trailers = dict(call.trailing_metadata())
            values = list(response.outputs[0].contents.fp64_contents)
            np.testing.assert_array_equal(values, versions.expected[response.model_version])
            again = stub.ModelInfer(request, timeout=30, metadata=[("x-tabserve-key", user)])
            assert again.model_version == response.model_version  # sticky
            rest = httpx.post(f"{base}/v2/models/demo/infer", headers={"x-tabserve-key": user}, timeout=30, json={
                "inputs": [{"name": "X", "datatype": "FP64", "shape": [3, 5], "data": ROWS}]})
            assert rest.json()["model_version"] == response.model_version  # the same pick as REST
            assert rest.json()["outputs"][0]["data"] == values
            seen[response.model_version] = trailers.get("x-tabserve-variant")
        assert seen == {"1": "1", "2": "primary"}
        deadline = time.monotonic() + 30
        while total(httpx.get(f"{base}/metrics", timeout=30).text, "tabserve_shadow_rows_total",
                    model="demo", shadow_version="1") == 0:
            assert time.monotonic() < deadline, "no shadow copy scored"
            time.sleep(0.2)
