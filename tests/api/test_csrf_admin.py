"""Admin routes: off unless API keys or admin_routes=on, declared next to each route, and closed to cross-site
browser requests (CSRF) against a keyless local server."""

from __future__ import annotations

import json

import pytest

import tabserve
from tabserve.api.admin_gate import admin_routes, api_routes
from tabserve.api.auth import hash_key

ROW = {"data": [0.1, 0.2, 0.3, 0.4, 0.5]}
UNLOAD = "/v2/repository/models/demo/unload"
ADMIN_KEY = "tsk_admin-key-for-csrf-tests"
KEYS = json.dumps([{"name": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["predict", "admin"]}])
# Every route that changes what is served; a new one must be added here, and to the gate.
ADMIN = [
    ("DELETE", "/api/v1/admin/traffic/{name}"),
    ("POST", "/api/v1/admin/models/{name}/reload"),
    ("POST", "/v2/repository/models/{model_name}/load"),
    ("POST", "/v2/repository/models/{model_name}/unload"),
    ("PUT", "/api/v1/admin/traffic/{name}"),
]
# POSTs that change nothing: they score, explain or list (a cross-site page could spend CPU, not state).
# POSTs that score, explain or record a label (feedback, #20): none changes what is served.
READ_ONLY_POSTS = ("/predict", "/predict/batch", "/infer", "/explain", "/v2/repository/index", "/invocations",
                   "/api/v1/feedback")
# What a browser sends cross-site without a CORS preflight.
SIMPLE_TYPES = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x"]


@pytest.fixture
def keyless(make_client, demo_model):
    with make_client(demo_model) as c:
        yield c


@pytest.fixture
def local_admin(make_client, demo_model):
    with make_client(demo_model, admin_routes="on", cors_origins=["https://app.example.com"]) as c:
        yield c


def ready(client, **headers: str) -> bool:
    return client.get("/v2/models/demo/ready", headers=headers).status_code == 200


def test_the_admin_routes_are_exactly_those_that_change_what_is_served(keyless):
    assert admin_routes(keyless.app) == sorted(ADMIN)
    routes = api_routes(keyless.app)
    assert len(routes) > 30  # the enumeration sees the included routers
    for method, path, admin in routes:
        if method not in ("GET", "HEAD"):
            assert admin or path.endswith(READ_ONLY_POSTS), f"{method} {path}: an admin route or not?"


def test_the_issue_s_csrf_unload_does_nothing_on_a_default_keyless_server(keyless):
    r = keyless.post(UNLOAD, content=b"{}", headers={"Content-Type": "text/plain",
                                                      "Origin": "https://evil.example"})
    assert r.status_code == 403
    assert "admin routes are off" in r.json()["error"] and "TABSERVE_ADMIN_ROUTES=on" in r.json()["error"]
    assert ready(keyless)


@pytest.mark.parametrize(("method", "path"), [("PUT", "/api/v1/admin/traffic/demo"),
                                              ("DELETE", "/api/v1/admin/traffic/demo"),
                                              ("POST", "/api/v1/admin/models/demo/reload"),
                                              ("POST", "/v2/repository/models/demo/load"),
                                              ("POST", UNLOAD)])
def test_every_admin_route_is_off_without_keys_and_names_the_setting(keyless, method, path):
    r = keyless.request(method, path, json={"shadow": "1"} if method == "PUT" else None)
    assert r.status_code == 403
    message = r.json().get("detail") or r.json()["error"]
    assert "TABSERVE_ADMIN_ROUTES=on" in message and "TABSERVE_API_KEYS" in message


def test_admin_routes_off_holds_even_with_an_admin_key(make_client, demo_model):
    with make_client(demo_model, api_keys=KEYS, admin_routes="off") as c:
        r = c.post(UNLOAD, headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 403 and "TABSERVE_ADMIN_ROUTES=off" in r.json()["error"]
        assert ready(c, **{"X-API-Key": ADMIN_KEY})


def test_with_api_keys_admin_routes_are_on_by_default(make_client, demo_model):
    with make_client(demo_model, api_keys=KEYS) as c:
        assert c.post(UNLOAD, headers={"X-API-Key": ADMIN_KEY}).status_code == 200


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_bodies_a_browser_sends_without_preflight_are_415(local_admin, content_type):
    r = local_admin.post(UNLOAD, content=b"{}", headers={"Content-Type": content_type})
    assert r.status_code == 415
    assert "send 'Content-Type: application/json'" in r.json()["error"]
    r = local_admin.put("/api/v1/admin/traffic/demo", content=b'{"shadow": "1"}',
                        headers={"Content-Type": content_type})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert ready(local_admin) and local_admin.get("/api/v1/traffic").json()["demo"]["shadow"] is None


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site", "Origin": "https://a.localhost"},
                                     {"Origin": "null"}])
def test_a_cross_site_browser_request_is_403_even_as_json(local_admin, headers):
    r = local_admin.post(UNLOAD, json={}, headers=headers)
    assert r.status_code == 403 and "from another site" in r.json()["error"]
    assert local_admin.delete("/api/v1/admin/traffic/demo", headers=headers).status_code == 403
    assert ready(local_admin)


def test_a_body_without_content_type_is_refused_from_a_browser(local_admin):
    r = local_admin.post(UNLOAD, content=b"{}", headers={"Origin": "http://testserver"})
    assert r.status_code == 415
    assert ready(local_admin)


def test_api_clients_keep_working(local_admin):
    """curl -X POST (no body), tritonclient (a JSON body without a Content-Type, no Origin), JSON clients, and
    this server's own pages or a CORS origin (same-origin fetches with JSON)."""
    assert local_admin.post(UNLOAD).status_code == 200
    assert local_admin.post("/v2/repository/models/demo/load", content=b"{}").status_code == 200
    assert local_admin.post(UNLOAD, content=b'{"parameters":{"unload_dependents":false}}').status_code == 200
    assert local_admin.post("/v2/repository/models/demo/load", json={},
                            headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
                            ).status_code == 200
    assert local_admin.post("/v2/repository/models/demo/load",  # a web app the operator listed for CORS
                            headers={"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"}
                            ).status_code == 200
    r = local_admin.post("/v2/repository/models/demo/load", json={},
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200 and ready(local_admin)


@pytest.mark.parametrize("content_type", [*SIMPLE_TYPES, None])
def test_predictions_accept_what_clients_send_today(keyless, content_type):
    """Predictions change nothing: curl -d sends form-urlencoded, and they stay accepted (the choice is in
    docs/production.md)."""
    headers = {"Content-Type": content_type} if content_type else {}
    r = keyless.post("/api/v1/predict", content=json.dumps(ROW).encode(), headers=headers)
    assert r.status_code == 200, r.text


def test_the_admin_setting_is_checked(make_client, demo_model):
    with pytest.raises(ValueError, match="admin_routes"):
        tabserve.Settings(admin_routes="yes")
