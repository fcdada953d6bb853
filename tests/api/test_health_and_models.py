from __future__ import annotations

import time

import orjson

from tests.api.conftest import ORIGINAL_ROW


def wait_ready(client, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200:
            return r
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout}s: {r.text}")


def test_original_health_endpoint_says_the_model_is_loaded(client):
    body = client.get("/api/v1/predict/health").json()
    assert body["model_loaded"] is True and body["status"] == "healthy"
    assert body["model_format"] == "onnx" and body["features_count"] == 5


def test_server_loads_its_model_in_the_background_then_is_ready(make_client, demo_bundle):
    with make_client(model_path=demo_bundle) as c:
        assert c.get("/healthz").status_code == 200
        ready = wait_ready(c).json()
        assert ready == {"status": "ready", "model": "demo", "model_version": ready["model_version"]}
        assert c.post("/api/v1/predict", json={"data": ORIGINAL_ROW}).status_code == 200


def test_without_a_model_live_is_200_ready_and_predict_are_503(make_client, tmp_path):
    with make_client(model_path=tmp_path / "nothing-here") as c:
        deadline = time.monotonic() + 5
        while c.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "does not exist" in ready.json()["error"]
        r = c.post("/api/v1/predict", json={"data": ORIGINAL_ROW})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "last load failed" in r.json()["detail"]
        health = c.get("/api/v1/predict/health").json()
        assert health["model_loaded"] is False and health["status"] == "unhealthy"


def test_models_endpoint_shows_the_manifest(client):
    body = client.get("/api/v1/models").json()
    assert body["state"] == "ready"
    (model,) = body["models"]
    assert [f["name"] for f in model["features"]] == [f"feature_{i}" for i in range(5)]
    assert {"min", "max", "mean", "std", "quantiles"} <= set(model["features"][0]["stats"])
    assert model["parity"]["passed"] is True
    assert "r2" in model["metrics"]
    assert model["serving"]["state"] == "ready" and model["serving"]["load_ms"] > 0
    assert client.get("/api/v1/models/demo").json()["name"] == "demo"
    missing = client.get("/api/v1/models/nope")
    assert missing.status_code == 404 and "unknown model 'nope'" in missing.json()["detail"]


def test_docs_work_offline(client):
    html = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    redoc = client.get("/redoc").text
    assert "/static-offline-docs/redoc.standalone.js" in redoc and "cdn" not in redoc.lower()
    assert client.get("/static-offline-docs/redoc.standalone.js").status_code == 200


def test_openapi_documents_the_request_bodies(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/v1/predict"]["post"]
    schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["data"]["type"] == "array"
    assert {"200", "413", "422", "503"} <= set(predict["responses"])


def test_one_json_log_line_per_request(make_client, demo_model, capfd):
    with make_client(demo_model, access_log=True) as c:
        capfd.readouterr()
        c.post("/api/v1/predict", json={"data": ORIGINAL_ROW}, headers={"X-Request-ID": "log-me"})
        c.post("/api/v1/predict", json={"data": [1]}, headers={"X-Request-ID": "log-bad"})
    lines = [orjson.loads(x) for x in capfd.readouterr().out.splitlines() if '"event":"request"' in x]
    by_id = {line["request_id"]: line for line in lines}
    ok, bad = by_id["log-me"], by_id["log-bad"]
    assert ok["route"] == "/api/v1/predict" and ok["status"] == 200 and ok["method"] == "POST"
    assert ok["model"] == "demo" and ok["model_version"] == demo_model.version
    assert ok["latency_ms"] > 0 and "timestamp" in ok
    assert bad["status"] == 422


def test_openapi_references_all_resolve(client):
    spec = client.get("/openapi.json").json()

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(spec):
        target = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # KeyError names a dangling reference
    assert spec["paths"]["/v2/models/{model_name}/infer"]["post"]["requestBody"]
