"""Ray Serve answers with the same app as ``tabserve serve``: the v1 and v2 endpoints, same predictions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from ray import serve

from tabserve.ray import deployment
from tests.servers import free_port

ROWS = [[0.1, 0.2, 0.3, 0.4, 0.5], [-1.0, 0.5, 2.0, -0.3, 1.1], [0.0, 0.0, 0.0, 0.0, 0.0]]


@pytest.fixture(scope="module")
def served(ray_address: str, demo_bundle) -> Iterator[str]:
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # two replicas of half a CPU each: the test instance has 2 CPUs, which the Ray Data tests need too
    app = deployment(demo_bundle, num_replicas=2, ray_actor_options={"num_cpus": 0.5})
    serve.run(app, name="tabserve", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_two_replicas_are_running(served):
    status = serve.status().applications["tabserve"]
    assert status.status == "RUNNING"
    assert status.deployments["tabserve"].replica_states == {"RUNNING": 2}


def test_v1_predict_and_batch_give_the_in_process_predictions(served, demo_model):
    expected = demo_model.predict(np.array(ROWS))
    one = httpx.post(f"{served}/api/v1/predict", json={"data": ROWS[1]})
    assert one.status_code == 200
    assert one.json()["prediction"] == expected[1]
    assert one.json()["model_name"] == "demo" and one.json()["features_count"] == 5
    batch = httpx.post(f"{served}/api/v1/predict/batch", json={"data": ROWS})
    assert batch.status_code == 200
    assert batch.json()["predictions"] == expected.tolist()


def test_v2_infer_metadata_and_health(served, demo_model):
    body = {"inputs": [{"name": "input", "shape": [3, 5], "datatype": "FP64", "data": [v for row in ROWS for v in row]}]}
    r = httpx.post(f"{served}/v2/models/demo/infer", json=body)
    assert r.status_code == 200
    out = r.json()["outputs"][0]
    assert out["shape"] == [3] and out["data"] == demo_model.predict(np.array(ROWS)).tolist()
    assert httpx.get(f"{served}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{served}/v2/models/demo").json()
    assert meta["name"] == "demo" and meta["inputs"][0]["shape"] == [-1, 5]
    assert httpx.get(f"{served}/readyz").json()["status"] == "ready"


def test_errors_are_the_servers_own(served):
    r = httpx.post(f"{served}/api/v1/predict", json={"data": [0.1, 0.2]})
    assert r.status_code == 422
    assert "got 2 values but the model expects 5 features" in r.json()["detail"]
    r = httpx.post(f"{served}/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404
