"""The data plane and the route table (#17): every declared route's access scope, a scoring fault is a 500 with
a request id and a logged traceback, a pinned version that cannot be loaded is a 503, the fast dispatch works
under a root_path, and the payload hook sees each answered prediction once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

import tabserve
from tabserve.api.admin_gate import admin_routes, api_routes
from tabserve.api.auth import hash_key
from tabserve.core.bundle import sha256
from tabserve.observability.payload import PayloadRecord

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
V1_PREDICT = ["/api/v1/predict", "/api/v1/predict/batch", "/api/v1/models/{name}/predict",
              "/api/v1/models/{name}/predict/batch", "/api/v1/models/{name}/versions/{version}/predict",
              "/api/v1/models/{name}/versions/{version}/predict/batch"]
# (method, path) -> access: probes are never authenticated nor limited, public needs no key, admin needs the
# admin scope and passes the admin gate. This is the whole public surface of the server.
EXPECTED = {
    **{("GET", p): "probe" for p in ("/healthz", "/readyz", "/api/v1/predict/health", "/v2/health/live",
                                    "/v2/health/ready", "/metrics", "/ping")},
    **{("GET", p): "public" for p in ("/", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")},
    **{("POST", p): "predict" for p in (*V1_PREDICT, "/v2/models/{model_name}/infer", "/invocations",
                                       "/v2/models/{model_name}/versions/{model_version}/infer",
                                       "/api/v1/explain", "/api/v1/models/{name}/explain",
                                       "/v2/models/{model_name}/explain",
                                       "/v2/models/{model_name}/versions/{model_version}/explain")},
    **{("GET", p): "read" for p in ("/api/v1/models", "/api/v1/models/{name}", "/api/v1/models/{name}/importance",
                                   "/api/v1/traffic", "/v2", "/v2/models/{model_name}",
                                   "/v2/models/{model_name}/ready", "/v2/models/{model_name}/versions/{model_version}",
                                   "/v2/models/{model_name}/versions/{model_version}/ready")},
    ("POST", "/v2/repository/index"): "read",
    ("POST", "/api/v1/feedback"): "predict",  # the closed loop (#20): labels by whoever predicts
    ("GET", "/api/v1/models/{name}/quality"): "read",
    ("PUT", "/api/v1/admin/traffic/{name}"): "admin",
    ("DELETE", "/api/v1/admin/traffic/{name}"): "admin",
    ("POST", "/api/v1/admin/models/{name}/reload"): "admin",
    ("POST", "/v2/repository/models/{model_name}/load"): "admin",
    ("POST", "/v2/repository/models/{model_name}/unload"): "admin",
}


def test_every_declared_route_has_the_access_scope_it_should(make_client: Any, demo_model: Any) -> None:
    with make_client(demo_model) as c:
        table = c.app.state.routes
        declared = {(r.method, r.path): r.access for r in table.routes}
        assert declared == EXPECTED
        # FastAPI's routes (and so the OpenAPI schema) are the declared ones, admin routes behind the gate
        served = {(m, p) for m, p, _ in api_routes(c.app)}
        assert served <= set(declared)  # nothing answers that the table does not declare
        assert {(r.method, r.path) for r in table.routes if r.endpoint is not None} <= served
        assert admin_routes(c.app) == sorted(k for k, v in EXPECTED.items() if v == "admin")
        # the guard asks the same table: a concrete path gets its template's scope
        assert table.access("GET", "/api/v1/models/demo") == "read"
        assert table.access("POST", "/api/v1/models/demo/versions/3/predict/batch") == "predict"
        assert table.access("POST", "/v2/repository/models/demo/unload") == "admin"
        assert table.access("GET", "/static-offline-docs/swagger-ui.css") == "public"


def test_probes_answer_without_a_key_and_predictions_need_one(make_client: Any, demo_model: Any) -> None:
    keys = json.dumps([{"name": "app", "sha256": hash_key("tsk_k"), "scopes": ["predict"]}])
    with make_client(demo_model, api_keys=keys) as c:
        for (method, path), access in EXPECTED.items():
            if access == "probe" and method == "GET":
                assert c.get(path).status_code == 200, path
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 401
        assert c.post("/api/v1/predict", json={"data": ROW}, headers={"X-API-Key": "tsk_k"}).status_code == 200


def test_an_onnxruntime_failure_while_scoring_is_a_500_with_the_request_id_and_a_logged_traceback(
        make_client: Any, demo_bundle: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    model = tabserve.load(demo_bundle)

    def fail(x: Any) -> Any:
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running TreeEnsemble")

    with make_client(model) as c:
        monkeypatch.setattr(model.runtime, "run", fail)
        capfd.readouterr()
        for path, body in (("/api/v1/predict", {"data": ROW}), ("/api/v1/predict/batch", {"data": [ROW] * 3})):
            r = c.post(path, json=body)
            assert r.status_code == 500, r.text
            request_id = r.headers["x-request-id"]
            assert r.json()["error"] == "scoring_failed" and r.json()["request_id"] == request_id
            assert request_id in r.json()["detail"]
        r = c.post("/v2/models/demo/infer", json={"inputs": [
            {"name": "X", "shape": [1, 5], "datatype": "FP64", "data": ROW}]})
        assert r.status_code == 500 and r.headers["x-request-id"] in r.json()["error"]
    logged = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    faults = [e for e in logged if e.get("event") == "scoring_failed"]
    assert len(faults) == 3 and faults[0]["request_id"]
    assert "Traceback" in faults[0]["exception"] and "TreeEnsemble" in faults[0]["exception"]


def test_a_pinned_version_that_fails_to_load_is_a_503_and_the_served_one_keeps_answering(
        make_client: Any, demo_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    for version in ("1", "2"):  # 2, the newest, is served; 1 is pinned on demand and cannot be loaded
        shutil.copytree(demo_bundle, folder / version)
        manifest = json.loads((folder / version / "tabserve.json").read_text())
        if version == "1":
            garbage = b"this is not an ONNX graph"
            (folder / version / "model.onnx").write_bytes(garbage)  # its manifest agrees: only onnxruntime can tell
            manifest["model"].update(sha256=sha256(garbage), size_bytes=len(garbage))
        (folder / version / "tabserve.json").write_text(json.dumps({**manifest, "version": version}))
    with make_client(model_path=folder) as c:
        for _ in range(600):  # the first load runs in the background
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        r = c.post("/api/v1/models/demo/versions/1/predict", json={"data": ROW})
        assert r.status_code == 503 and r.json()["error"] == "version_unavailable", r.text
        assert "version '1' of model 'demo' cannot be loaded" in r.json()["detail"]
        r = c.post("/v2/models/demo/versions/1/infer", json={"inputs": [
            {"name": "X", "shape": [1, 5], "datatype": "FP64", "data": ROW}]})
        assert r.status_code == 503
        assert c.post("/api/v1/models/demo/versions/2/predict", json={"data": ROW}).status_code == 200
        assert c.post("/api/v1/models/demo/versions/9/predict", json={"data": ROW}).status_code == 404


def test_the_fast_dispatch_answers_under_a_root_path(demo_model: Any) -> None:
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)
    with TestClient(app, root_path="/ml") as c:
        r = c.post("/ml/api/v1/predict", json={"data": ROW})
        assert r.status_code == 200 and isinstance(r.json()["prediction"], float)
        assert c.post("/ml/api/v1/models/demo/predict/batch", json={"data": [ROW, ROW]}).status_code == 200
        assert c.post("/ml/api/v1/predict", json={"data": [1, 2]}).status_code == 422


class Recorder:
    def __init__(self) -> None:
        self.records: list[PayloadRecord] = []

    def offer(self, *fields: Any) -> None:
        self.records.append(PayloadRecord(*fields))


def test_each_answered_prediction_is_offered_once_to_the_payload_sink(demo_model: Any) -> None:
    sink = Recorder()
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model, payload=sink)
    with TestClient(app) as c:
        r1 = c.post("/api/v1/predict", json={"data": ROW})
        r2 = c.post("/api/v1/predict/batch", json={"data": [ROW, ROW]})
        r3 = c.post("/v2/models/demo/infer", json={"inputs": [
            {"name": "X", "shape": [1, 5], "datatype": "FP64", "data": ROW}]})
        assert c.post("/api/v1/predict", json={"data": [1]}).status_code == 422  # refused: not offered
    assert [r.protocol for r in sink.records] == ["v1", "v1", "v2"]
    assert [r.request_id for r in sink.records] == [x.headers["x-request-id"] for x in (r1, r2, r3)]
    assert sink.records[1].prediction.values.shape == (2,) and sink.records[0].model is demo_model
    assert np.allclose(sink.records[0].prediction.values, [r1.json()["prediction"]])
