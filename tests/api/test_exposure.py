"""What the server gives away: client identity behind proxies, filesystem paths, files an admin may load, and
the size of error bodies that quote client input."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import tabserve
from tabserve.api import server
from tabserve.errors import ConfigError
from tests.servers import running_server

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
FEATURES = ["x0", "x1", "x2", "x3", "x4"]


def _forwarded(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.{i}"}


# -- proxies and client identity ----------------------------------------------------------------------------

def _peer(app, address: tuple[str, int]):
    """``app`` as seen from ``address`` (TestClient's own ``client=`` needs a newer Starlette)."""
    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http":
            scope["client"] = address
        await app(scope, receive, send)

    return asgi


def _local_client(demo_model, **settings) -> TestClient:
    app = tabserve.create_app(tabserve.Settings(access_log=False, rate_limit="3/minute", **settings), model=demo_model)
    return TestClient(_peer(app, ("127.0.0.1", 50000)))


def test_rotating_x_forwarded_for_does_not_escape_the_rate_limit(demo_model):
    with _local_client(demo_model) as c:
        codes = [c.post("/api/v1/predict", json={"data": ROW}, headers=_forwarded(i)).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_a_configured_proxy_is_believed_from_the_right(demo_model):
    with _local_client(demo_model, trusted_proxies=["127.0.0.0/8", "10.0.0.0/8"]) as c:
        # each forwarded client has its own limit
        assert [c.post("/api/v1/predict", json={"data": ROW}, headers=_forwarded(i)).status_code
                for i in range(5)] == [200] * 5
        # what a client writes to the left of its real address (as the proxy appends it) changes nothing
        codes = [c.post("/api/v1/predict", json={"data": ROW},
                        headers={"X-Forwarded-For": f"203.0.113.{i}, 192.0.2.7, 10.1.2.3"}).status_code
                 for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_an_untrusted_peer_cannot_pick_its_address_even_when_proxies_are_configured(demo_model):
    app = tabserve.create_app(tabserve.Settings(access_log=False, rate_limit="3/minute",
                                                trusted_proxies=["10.0.0.0/8"]), model=demo_model)
    with TestClient(_peer(app, ("192.0.2.50", 4000))) as c:
        codes = [c.post("/api/v1/predict", json={"data": ROW}, headers=_forwarded(i)).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.parametrize("value", ["*", "not-an-ip", "10.0.0.0/99"])
def test_bad_trusted_proxies_refuse_to_start(value):
    with pytest.raises(ConfigError, match="trusted_proxies"):
        tabserve.create_app(tabserve.Settings(trusted_proxies=[value], pretrain=False))


def test_tabserve_serve_turns_uvicorn_s_own_forwarded_handling_off(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, config):
            seen["config"] = config
            self.started = True

        def run(self):
            pass

    monkeypatch.setattr(server, "GracefulServer", Recorder)
    assert server._run(tabserve.Settings(workers=1)) == 0
    assert seen["config"].proxy_headers is False


@pytest.mark.slow
def test_a_real_server_does_not_believe_x_forwarded_for_from_127_0_0_1(demo_bundle):
    """uvicorn's default believes it from 127.0.0.1 (forwarded_allow_ips); tabserve serve must not."""
    with running_server(str(demo_bundle), "--no-access-log", env={"TABSERVE_RATE_LIMIT": "3/minute"}) as base:
        codes = [httpx.post(f"{base}/api/v1/predict", json={"data": ROW}, headers=_forwarded(i), timeout=10
                            ).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


# -- paths in answers ---------------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, demo_bundle) -> Path:
    home = tmp_path / "home"
    shutil.copytree(demo_bundle, home / "models" / "demo" / "1")
    return home


def _client(home: Path, **settings) -> TestClient:
    return TestClient(tabserve.create_app(tabserve.Settings(home=home, model_path=home / "models" / "demo",
                                                            access_log=False, poll_interval_s=0,
                                                            admin_routes="on", **settings)))


def _wait_ready(c: TestClient) -> None:
    for _ in range(400):
        if c.get("/readyz").status_code == 200:
            return
        import time

        time.sleep(0.05)
    raise AssertionError(c.get("/readyz").text)


def test_models_traffic_and_errors_show_paths_relative_to_the_home(home):
    with _client(home) as c:
        _wait_ready(c)
        for path in ("/api/v1/models", "/api/v1/models/demo", "/api/v1/traffic"):
            r = c.get(path)
            assert r.status_code == 200 and str(home) not in r.text, path
        serving = c.get("/api/v1/models/demo").json()["serving"]
        assert serving["uri"] == "HOME/models/demo" and serving["path"] == "HOME/models/demo/1"
        assert c.get("/api/v1/traffic").json()["demo"]["variants"][0]["path"] == "HOME/models/demo/1"

        (home / "models" / "demo" / "1" / "model.onnx").write_bytes(b"not onnx")
        for r in (c.post("/api/v1/admin/models/demo/reload"), c.post("/v2/repository/models/demo/load")):
            assert r.status_code in (400, 422) and str(home) not in r.text
            assert "HOME/models/demo/1/model.onnx has sha256" in r.text
        assert str(home) not in c.post("/v2/repository/index").text
        assert str(home) not in c.get("/api/v1/models").text  # the last failure too
        assert c.post("/v2/models/demo/infer", json={
            "inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": ROW}]}).status_code == 200


def test_a_home_that_is_a_prefix_of_another_folder_is_not_mangled(tmp_path, demo_bundle):
    home = tmp_path / "h"
    shutil.copytree(demo_bundle, tmp_path / "h2" / "demo")
    home.mkdir()
    with TestClient(tabserve.create_app(tabserve.Settings(home=home, model_path=tmp_path / "h2" / "demo",
                                                          access_log=False))) as c:
        _wait_ready(c)
        assert c.get("/api/v1/models/demo").json()["serving"]["path"] == "MODEL_PATH"


# -- files the admin API may load ---------------------------------------------------------------------------

def test_variants_must_come_from_inside_the_model_roots(home, tmp_path, demo_bundle):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(demo_bundle, elsewhere / "demo" / "1")
    with _client(home) as c:
        _wait_ready(c)
        messages = []
        for label in (str(elsewhere / "demo" / "1"), str(tmp_path / "nothing-here"), "../../../etc", "/etc"):
            for body in ({"variants": {label: 10}}, {"shadow": label}):
                r = c.put("/api/v1/admin/traffic/demo", json=body)
                assert r.status_code == 403, r.text
                messages.append(r.json()["detail"].split(": ", 1)[1])  # after "traffic variant 'LABEL'"
        assert len(set(messages)) == 1  # the same words whether the path exists or not
        assert "inside the folders models may come from (HOME, MODEL_PATH" in messages[0]
        assert "TABSERVE_MODEL_ROOTS" in messages[0]
        assert c.get("/api/v1/traffic").json()["demo"]["shadow"] is None  # nothing was set or loaded
        assert len(c.app.state.manager.slots) == 1
        assert c.put("/api/v1/admin/traffic/demo", json={"shadow": "1"}).status_code == 200  # a version: fine

    with _client(home, model_roots=[str(elsewhere)]) as c:
        _wait_ready(c)
        r = c.put("/api/v1/admin/traffic/demo", json={"shadow": str(elsewhere / "demo" / "1")})
        assert r.status_code == 200, r.text
        assert r.json()["shadow"]["path"] == "MODEL_ROOTS[0]/demo/1" and str(tmp_path) not in r.text


# -- error bodies that quote client input --------------------------------------------------------------------

HUGE = "k" * 10_000_000


def _small(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text[:300]
    assert len(r.content) < 2048, len(r.content)
    return r.text


def test_a_10_mb_unknown_key_answers_a_small_error(client):
    record = dict(zip(FEATURES, ROW, strict=True))
    text = _small(client.post("/api/v1/predict/batch", json={"records": [{**record, HUGE: 1}]}), 422)
    assert "unknown feature(s) 'kkkk" in text and "(10000000 chars)" in text


@pytest.mark.parametrize("request_kwargs", [
    {"url": "/api/v1/predict", "json": {"data": [HUGE, 0.2, 0.3, 0.4, 0.5]}},
    {"url": "/v2/models/demo/infer", "json": {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32",
                                                          "data": ROW}], "outputs": [{"name": HUGE}]}},
    {"url": "/v2/models/demo/infer", "json": {"inputs": [{"name": "X", "shape": [1, 5], "datatype": HUGE,
                                                          "data": ROW}]}},
    {"url": "/v2/models/demo/infer", "json": {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32",
                                                          "data": [*ROW[:4], HUGE]}]}},
    {"url": "/v2/models/" + "m" * 20_000 + "/infer", "json": {"inputs": []}},
    {"url": "/api/v1/models/" + "m" * 20_000 + "/predict", "json": {"data": ROW}},
    {"url": "/v2/models/demo/versions/" + "9" * 20_000 + "/infer", "json": {"inputs": []}},
    {"url": "/api/v1/predict", "content": b'{"data": [1]}', "headers": {"Content-Encoding": "x" * 100_000}},
    {"url": "/v2/models/demo/infer", "content": b"{}", "headers": {"Inference-Header-Content-Length": "9" * 100_000}},
])
def test_client_values_are_quoted_shortened(client, request_kwargs):
    r = client.post(**request_kwargs)
    assert 400 <= r.status_code < 500  # the header of 100,000 digits was a 500 (int() refuses them)
    _small(r, r.status_code)
    assert "chars)" in r.text or "…" in r.text or "100000 digits" in r.text
