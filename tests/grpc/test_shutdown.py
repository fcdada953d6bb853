"""SIGTERM: gRPC drains with HTTP. During shutdown_delay_s ServerReady says false (grpc.health.v1: NOT_SERVING, sent to
watchers too) while calls are still answered;
then new calls are refused and the process exits 0. No call is cut: each is answered or refused UNAVAILABLE."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1.health_pb2_grpc import HealthStub

from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import infer_request
from tests.servers import free_port, tabserve_cmd

pytestmark = pytest.mark.slow

ROWS = 2000
BATCH = infer_request("demo", X=("FP64", [ROWS, 5], [0.1, 0.2, 0.3, 0.4, 0.5] * ROWS))


def test_sigterm_drains_grpc_with_http(demo_bundle, tmp_path):
    port, grpc_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(tabserve_cmd("serve", str(demo_bundle), "--port", str(port), "--grpc-port",
                                         str(grpc_port), "--no-access-log", "--shutdown-delay-s", "3"),
                            env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    outcomes: list[str] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready in time"
            time.sleep(0.1)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready

        def load() -> None:  # 2,000-row calls back to back, across the whole shutdown
            while not stop.is_set():
                try:
                    stub.ModelInfer(BATCH, timeout=30)
                    outcomes.append("OK")
                except grpc.RpcError as exc:
                    outcomes.append(exc.code().name)
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        time.sleep(0.05)

        worker = threading.Thread(target=load)
        health = HealthStub(channel)
        watch = health.Watch(hpb.HealthCheckRequest(), timeout=60)
        assert next(watch).status == hpb.HealthCheckResponse.SERVING
        worker.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready  # within shutdown_delay_s
        assert health.Check(hpb.HealthCheckRequest(), timeout=30).status == hpb.HealthCheckResponse.NOT_SERVING
        assert next(watch).status == hpb.HealthCheckResponse.NOT_SERVING
        answered = outcomes.count("OK")
        time.sleep(1)
        assert outcomes.count("OK") > answered  # still serving during the delay
        assert proc.wait(timeout=30) == 0
        assert list(watch) == []  # the stream ended with the server, not cut by the grace
        stop.set()
        worker.join(timeout=60)
        channel.close()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert outcomes[0] == "OK"
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes  # none cut (CANCELLED, INTERNAL, UNKNOWN)
