"""Open Inference Protocol v2: health, metadata and the repository extension (in-process)."""

from __future__ import annotations

import shutil
import time

import pytest

from tabserve.protocol.tensors import datatype_for
from tests.api.conftest import ORIGINAL_ROW

INFER = {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": ORIGINAL_ROW}]}


def wait_v2_ready(client, timeout=10.0):
    deadline = time.monotonic() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout}s: {client.get('/readyz').text}")
        time.sleep(0.02)


def test_server_metadata_lists_the_extensions(client):
    r = client.get("/v2")
    assert r.status_code == 200
    assert r.json() == {"name": "tabserve", "version": "0.1.0",
                        "extensions": ["binary_tensor_data", "model_repository"]}


def test_live_and_ready_answer_with_their_status_code(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    ready = client.get("/v2/models/demo/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "demo", "ready": True}
    assert client.get("/v2/models/demo/versions/1/ready").status_code == 200


def test_model_metadata_matches_the_manifest(client, demo_model):
    manifest = demo_model.manifest
    for path in ("/v2/models/demo", f"/v2/models/demo/versions/{manifest.version}"):
        body = client.get(path).json()
        assert body["name"] == manifest.name and body["versions"] == [manifest.version]
        assert body["platform"] == "onnxruntime_onnx"
        input_type = datatype_for(manifest.input.dtype)
        assert body["inputs"] == [{"name": manifest.input.name, "datatype": input_type,
                                   "shape": [-1, len(manifest.features)]}]
        assert body["outputs"] == [{"name": o.name, "datatype": datatype_for(o.dtype),
                                    "shape": [-1 if d is None else d for d in o.shape]} for o in manifest.outputs]
        assert body["features"] == [{"name": f.name, "datatype": input_type, "shape": [-1]}
                                    for f in manifest.features]


def test_classifier_metadata_has_label_and_probabilities(make_client, iris_model):
    with make_client(iris_model) as c:
        body = c.get("/v2/models/iris").json()
    label, proba = iris_model.manifest.outputs
    assert body["outputs"] == [{"name": label.name, "datatype": "BYTES", "shape": [-1]},
                               {"name": proba.name, "datatype": datatype_for(proba.dtype), "shape": [-1, 3]}]
    assert body["task"] == "classification" and body["classes"] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(("path", "message"), [
    ("/v2/models/nope", "unknown model 'nope'; this server serves 'demo'"),
    ("/v2/models/nope/ready", "unknown model 'nope'; this server serves 'demo'"),
    ("/v2/models/demo/versions/7", "model 'demo' has no version '7'; the served version is '1'"),
    ("/v2/models/demo/versions/7/ready", "model 'demo' has no version '7'; the served version is '1'"),
])
def test_unknown_models_and_versions_are_404_naming_the_served_one(client, path, message):
    r = client.get(path)
    assert r.status_code == 404 and r.json() == {"error": message}
    assert r.headers["content-type"] == "application/json"
    infer = path.removesuffix("/ready") + "/infer"
    assert client.post(infer, json=INFER).status_code == 404


def test_without_a_ready_model_readiness_and_infer_are_503(make_client, tmp_path):
    with make_client(model_path=tmp_path / "missing") as c:
        deadline = time.monotonic() + 5
        while c.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/v2/health/live").status_code == 200
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "does not exist" in ready.json()["error"]
        assert c.get("/v2/models/demo/ready").status_code == 503
        for r in (c.get("/v2/models/demo"), c.post("/v2/models/demo/infer", json=INFER)):
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "no model is loaded: the last load failed" in r.json()["error"]
        assert c.post("/v2/repository/index").json() == []


def test_readiness_turns_true_once_the_background_load_is_done(make_client, demo_bundle):
    with make_client(model_path=demo_bundle) as c:
        wait_v2_ready(c)
        assert c.get("/v2/models/demo/ready").status_code == 200
        assert c.post("/v2/models/demo/infer", json=INFER).status_code == 200


@pytest.fixture
def admin_client(make_client, demo_model):
    with make_client(demo_model, admin_routes="on") as c:
        yield c


def test_repository_index_unload_and_load(admin_client, demo_model):
    client = admin_client
    entry = {"name": "demo", "version": demo_model.version}
    assert client.post("/v2/repository/index").json() == [{**entry, "state": "READY"}]
    unloaded = client.post("/v2/repository/models/demo/unload", json={"parameters": {"unload_dependents": False}})
    assert unloaded.status_code == 200
    assert unloaded.json() == {**entry, "state": "UNAVAILABLE", "reason": "unloaded"}
    assert client.post("/v2/repository/index").json() == [{**entry, "state": "UNAVAILABLE", "reason": "unloaded"}]
    assert client.post("/v2/repository/index", json={"ready": True}).json() == []
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/v2/models/demo/ready").json() == {
        "name": "demo", "ready": False, "error": "model 'demo' was unloaded; load it again to serve it"}
    r = client.post("/v2/models/demo/infer", json=INFER)
    assert r.status_code == 503 and "'demo' was unloaded" in r.json()["error"]
    assert client.post("/api/v1/predict", json={"data": ORIGINAL_ROW}).status_code == 503
    assert client.get("/readyz").json()["status"] == "unloaded"
    assert client.post("/v2/models/other/infer", json=INFER).status_code == 404  # the name is still known
    assert client.post("/v2/repository/models/demo/unload").status_code == 200  # unloading twice is fine

    loaded = client.post("/v2/repository/models/demo/load")
    assert loaded.status_code == 200 and loaded.json() == {**entry, "state": "READY"}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/v2/models/demo/infer", json=INFER).status_code == 200


def test_repository_refuses_unknown_models_and_config_overrides(admin_client):
    client = admin_client
    for action in ("load", "unload"):
        r = client.post(f"/v2/repository/models/nope/{action}")
        assert r.status_code == 404 and "unknown model 'nope'; the repository holds 'demo'" in r.json()["error"]
    r = client.post("/v2/repository/models/demo/load", json={"parameters": {"config": "{}"}})
    assert r.status_code == 400 and "config overrides are not supported" in r.json()["error"]
    assert client.post("/v2/repository/index", content=b"[").status_code == 400


def test_a_failed_load_keeps_the_served_version(make_client, demo_bundle, tmp_path):
    bundle = tmp_path / "demo"
    shutil.copytree(demo_bundle, bundle)
    with make_client(model_path=bundle, admin_routes="on") as c:
        wait_v2_ready(c)
        original = (bundle / "model.onnx").read_bytes()
        (bundle / "model.onnx").write_bytes(original + b"tampered")
        r = c.post("/v2/repository/models/demo/load")
        assert r.status_code == 400
        assert r.json()["error"].startswith("loading model 'demo' from MODEL_PATH failed: ")  # not the absolute path
        assert "sha256" in r.json()["error"] and "version '1' is still served" in r.json()["error"]
        assert c.get("/v2/health/ready").status_code == 200
        assert c.post("/v2/models/demo/infer", json=INFER).status_code == 200
        assert c.post("/v2/repository/index").json()[0]["state"] == "READY"

        c.post("/v2/repository/models/demo/unload")
        assert c.post("/v2/repository/models/demo/load").status_code == 400
        (entry,) = c.post("/v2/repository/index").json()
        assert entry["state"] == "UNAVAILABLE" and entry["reason"].startswith("load failed: ")
        (bundle / "model.onnx").write_bytes(original)
        assert c.post("/v2/repository/models/demo/load").status_code == 200
        assert c.post("/v2/models/demo/infer", json=INFER).status_code == 200


def test_openapi_documents_the_v2_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}",
                 "/v2/models/{model_name}/versions/{model_version}", "/v2/models/{model_name}/ready",
                 "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer",
                 "/v2/repository/index", "/v2/repository/models/{model_name}/load",
                 "/v2/repository/models/{model_name}/unload"):
        assert path in paths, path
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"200", "400", "404", "413", "503"} <= set(infer["responses"])
