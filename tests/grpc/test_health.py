"""grpc.health.v1 beside the inference service, called with grpcio-health-checking's own client stub (what
Kubernetes' grpc probe and grpc-health-probe send): SERVING while the models are ready, NOT_SERVING otherwise."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1.health_pb2_grpc import HealthStub

from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import grpc_server

SERVING, NOT_SERVING = hpb.HealthCheckResponse.SERVING, hpb.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"])
def test_check_says_serving_when_the_models_are_ready(server, service):
    with grpc.insecure_channel(server[1]) as channel:
        assert HealthStub(channel).Check(hpb.HealthCheckRequest(service=service), timeout=30).status == SERVING


def test_check_of_an_unknown_service_is_not_found(server):
    with grpc.insecure_channel(server[1]) as channel, pytest.raises(grpc.RpcError) as caught:
        HealthStub(channel).Check(hpb.HealthCheckRequest(service="no.such.Service"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_follows_unload_and_load(demo_bundle):
    """Unloading the model (repository extension) turns Check and a Watch stream to NOT_SERVING; loading it again
    back to SERVING."""
    with grpc_server(str(demo_bundle), "--no-access-log", "--admin-routes", "on") as (_, address), \
            grpc.insecure_channel(address) as channel:
        health, inference = HealthStub(channel), GRPCInferenceServiceStub(channel)
        seen: queue.Queue[int] = queue.Queue()
        stream = health.Watch(hpb.HealthCheckRequest(service=""), timeout=120)

        def follow() -> None:
            try:
                for update in stream:
                    seen.put(update.status)
            except grpc.RpcError:
                pass

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()
        try:
            assert seen.get(timeout=30) == SERVING
            inference.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="demo"), timeout=30)
            assert health.Check(hpb.HealthCheckRequest(), timeout=30).status == NOT_SERVING
            assert seen.get(timeout=30) == NOT_SERVING
            inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="demo"), timeout=60)
            assert health.Check(hpb.HealthCheckRequest(), timeout=30).status == SERVING
            assert seen.get(timeout=30) == SERVING
        finally:
            stream.cancel()
            watcher.join(timeout=30)
