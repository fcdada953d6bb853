"""API keys and rate limits over gRPC: the same keys, scopes and limits as HTTP, from the call's metadata."""

from __future__ import annotations

import json

import grpc
import pytest

from tabserve.api.auth import hash_key
from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import grpc_server, infer_request, run_client

pytestmark = pytest.mark.slow

PREDICT_KEY, ADMIN_KEY = "tsk_predict_only_for_grpc_tests", "tsk_admin_for_grpc_tests"
KEYS = [{"name": "checkout", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"], "rate_limit": "6/minute"},
        {"name": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["predict", "admin"]}]
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


@pytest.fixture(scope="module")
def guarded(demo_bundle):
    env = {"TABSERVE_API_KEYS": json.dumps(KEYS)}
    with grpc_server(str(demo_bundle), "--no-access-log", env=env) as (_, address), \
            grpc.insecure_channel(address) as channel:
        yield address, GRPCInferenceServiceStub(channel)


def code_of(call, request, metadata=()) -> tuple[grpc.StatusCode, str, tuple]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30, metadata=metadata)
    return caught.value.code(), caught.value.details(), caught.value.trailing_metadata()


def test_keys_from_metadata(guarded):
    _, stub = guarded
    request = infer_request("demo", X=("FP64", [1, 5], ROW))
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=30).live  # probes need no key
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    code, details, _ = code_of(stub.ModelInfer, request)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == "missing API key: send the metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'"
    code, details, _ = code_of(stub.ModelInfer, request, [("x-api-key", "tsk_wrong")])
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
    assert code_of(stub.ModelMetadata, pb.ModelMetadataRequest(name="demo"))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stub.ModelInfer(request, timeout=30, metadata=[("authorization", f"Bearer {ADMIN_KEY}")]).outputs


def test_repository_load_and_unload_need_the_admin_scope(guarded):
    address, stub = guarded
    code, details, _ = code_of(stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="demo"),
                               [("authorization", f"Bearer {PREDICT_KEY}")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'admin' scope" in details
    # tritonclient.grpc, unchanged, with the admin key in its headers
    job = {"client": "triton", "url": address, "model": "demo", "headers": {"x-api-key": ADMIN_KEY}}
    assert run_client({**job, "call": "unload"}) == {"ready": False}
    assert run_client({**job, "call": "load"}) == {"ready": True}


def test_rate_limit_is_resource_exhausted_with_retry_after(guarded):
    _, stub = guarded
    key = [("authorization", f"Bearer {PREDICT_KEY}")]
    code, details, trailers = code_of(stub.ModelInfer, infer_request("demo", X=("FP64", [10, 5], ROW * 10)), key)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == ("this request has 10 rows but the rate limit is 6/minute (each row counts): split the "
                       "batch")
    assert any(k == "retry-after" and int(v) >= 1 for k, v in trailers)
    for _ in range(8):  # one row each: the window runs out
        try:
            stub.ModelInfer(infer_request("demo", X=("FP64", [1, 5], ROW)), timeout=30, metadata=key)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit 6/minute" in exc.details()
            break
    else:
        raise AssertionError("8 one-row calls passed a 6/minute limit")
