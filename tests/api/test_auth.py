"""API keys (hashed in the configuration), scopes, CORS, and the `tabserve keys` helper."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

import tabserve
from tabserve.api import auth
from tabserve.api.auth import KeyRing, hash_key, parse_api_keys
from tabserve.errors import ConfigError
from tests.servers import tabserve_cmd

ROW = {"data": [0.1, 0.2, 0.3, 0.4, 0.5]}
V2_BODY = {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": ROW["data"]}]}
PREDICT_KEY, ADMIN_KEY = "tsk_predict-only-key-for-tests", "tsk_admin-key-for-tests"
KEYS = json.dumps([
    {"name": "checkout", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]},
    {"name": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["predict", "admin"]},
])
PROBES = ["/healthz", "/readyz", "/api/v1/predict/health", "/v2/health/live", "/v2/health/ready", "/metrics"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def secured(make_client, demo_model):
    with make_client(demo_model, api_keys=KEYS) as c:
        yield c


def test_auth_is_off_by_default(client):
    assert client.post("/api/v1/predict", json=ROW).status_code == 200


def test_no_key_is_401_with_a_bearer_challenge(secured):
    r = secured.post("/api/v1/predict", json=ROW)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["error"] == "unauthenticated"
    assert "Authorization: Bearer KEY" in r.json()["detail"]
    r = secured.post("/v2/models/demo/infer", json=V2_BODY)  # v2 keeps its own error body
    assert r.status_code == 401 and "missing API key" in r.json()["error"]


@pytest.mark.parametrize("headers", [bearer("tsk_wrong"), {"X-API-Key": "tsk_wrong"}, bearer(hash_key(PREDICT_KEY)),
                                     {"Authorization": f"Basic {PREDICT_KEY}"}])
def test_a_wrong_key_or_the_hash_itself_is_401(secured, headers):
    r = secured.post("/api/v1/predict", json=ROW, headers=headers)
    assert r.status_code == 401


@pytest.mark.parametrize("headers", [bearer(PREDICT_KEY), {"authorization": f"bearer {PREDICT_KEY}"},
                                     {"X-API-Key": PREDICT_KEY}])
def test_a_good_key_in_either_header_predicts(secured, headers):
    assert secured.post("/api/v1/predict", json=ROW, headers=headers).status_code == 200
    assert secured.post("/api/v1/predict/batch", json={"data": [ROW["data"]] * 2}, headers=headers).status_code == 200
    assert secured.post("/v2/models/demo/infer", json=V2_BODY, headers=headers).status_code == 200
    assert secured.get("/api/v1/models", headers=headers).status_code == 200


def test_model_management_needs_the_admin_scope(secured):
    r = secured.post("/v2/repository/models/demo/unload", headers=bearer(PREDICT_KEY))
    assert r.status_code == 403
    assert "lacks the 'admin' scope" in r.json()["error"]
    assert secured.post("/v2/repository/models/demo/load", headers=bearer(PREDICT_KEY)).status_code == 403
    assert secured.post("/v2/repository/models/demo/unload").status_code == 401
    assert secured.get("/readyz").status_code == 200  # nothing was unloaded
    assert secured.post("/v2/repository/models/demo/unload", headers=bearer(ADMIN_KEY)).status_code == 200
    assert secured.post("/v2/repository/models/demo/load", headers=bearer(ADMIN_KEY)).status_code == 200
    assert secured.post("/v2/repository/index", headers=bearer(PREDICT_KEY)).status_code == 200


@pytest.mark.parametrize("path", PROBES)
def test_probes_and_metrics_need_no_key(secured, path):
    assert secured.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/"])
def test_the_api_description_is_public(secured, path):
    assert secured.get(path).status_code == 200


def test_metadata_routes_need_a_key(secured):
    assert secured.get("/api/v1/models").status_code == 401
    assert secured.get("/v2/models/demo").status_code == 401
    assert secured.get("/v2/models/demo", headers={"X-API-Key": PREDICT_KEY}).status_code == 200


def test_keys_can_come_from_a_file(make_client, demo_model, tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(KEYS)
    with make_client(demo_model, api_keys=str(path)) as c:
        assert c.post("/api/v1/predict", json=ROW).status_code == 401
        assert c.post("/api/v1/predict", json=ROW, headers=bearer(PREDICT_KEY)).status_code == 200


@pytest.mark.parametrize(("value", "fragment"), [
    ("not json [", "cannot be read"),
    ("[1", "not valid JSON"),
    ("[]", "non-empty JSON list"),
    ('[{"name": "a", "key": "plain-text"}]', "unknown field(s) key"),
    ('[{"name": "a", "sha256": "abc"}]', "64 hex digits"),
    (json.dumps([{"name": "a", "sha256": "0" * 64, "scopes": ["root"]}]), "use [\"predict\"]"),
    (json.dumps([{"name": "a b", "sha256": "0" * 64}]), "needs a \"name\""),
    (json.dumps([{"name": "a", "sha256": "0" * 64}, {"name": "a", "sha256": "1" * 64}]), "more than once"),
    (json.dumps([{"name": "a", "sha256": "0" * 64}, {"name": "b", "sha256": "0" * 64}]), "more than once"),
    (json.dumps([{"name": "a", "sha256": "0" * 64, "rate_limit": "lots"}]), "is not a rate limit"),
])
def test_a_bad_key_configuration_refuses_to_start(demo_model, value, fragment):
    with pytest.raises(ConfigError) as info:
        tabserve.create_app(tabserve.Settings(api_keys=value, access_log=False), model=demo_model)
    assert fragment in str(info.value)


def test_scopes_default_to_predict():
    (key,) = parse_api_keys(json.dumps([{"name": "a", "sha256": "A" * 64}]))
    assert key.scopes == frozenset({"predict"}) and key.sha256 == "a" * 64


def test_every_configured_hash_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    ring = KeyRing(parse_api_keys(KEYS))
    assert ring.find(PREDICT_KEY).name == "checkout"  # the first key matches, the second is still compared
    assert len(calls) == 2
    assert ring.find("nope") is None


# -- CORS --------------------------------------------------------------------------------------------------

def test_cors_answers_allowed_origins_only(make_client, demo_model):
    with make_client(demo_model, cors_origins="https://app.example.com", api_keys=KEYS) as c:
        preflight = c.options("/api/v1/predict", headers={
            "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200  # no key needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        r = c.post("/api/v1/predict", json=ROW, headers={"Origin": "https://app.example.com", **bearer(PREDICT_KEY)})
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        refused = c.post("/api/v1/predict", json=ROW, headers={"Origin": "https://app.example.com"})
        assert refused.status_code == 401  # a browser can read why
        assert refused.headers["access-control-allow-origin"] == "https://app.example.com"
        other = c.post("/api/v1/predict", json=ROW, headers={"Origin": "https://evil.example", **bearer(PREDICT_KEY)})
        assert "access-control-allow-origin" not in other.headers
        bad = c.options("/api/v1/predict", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
        assert bad.status_code == 400


def test_no_cors_headers_by_default(client):
    r = client.post("/api/v1/predict", json=ROW, headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"cors_origins": "*", "cors_allow_credentials": True}, "list the allowed origins instead"),
    ({"cors_origins": "*,https://a.example"}, "give it alone"),
    ({"cors_origins": "https://a.example/"}, "is not an origin"),
    ({"cors_origins": "a.example"}, "is not an origin"),
])
def test_unsafe_cors_configurations_refuse_to_start(demo_model, settings, fragment):
    with pytest.raises(ConfigError) as info:
        tabserve.create_app(tabserve.Settings(access_log=False, **settings), model=demo_model)
    assert fragment in str(info.value)


def test_cors_origins_read_from_the_environment_as_a_list(monkeypatch):
    monkeypatch.setenv("TABSERVE_CORS_ORIGINS", "https://a.example, https://b.example")
    assert tabserve.Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("TABSERVE_CORS_ORIGINS", '["https://c.example"]')
    settings = tabserve.Settings()
    assert settings.cors_origins == ["https://c.example"]
    assert settings.to_env()["TABSERVE_CORS_ORIGINS"] == '["https://c.example"]'  # what workers read back


# -- the CLI ------------------------------------------------------------------------------------------------

def test_keys_hash_prints_the_sha256():
    out = subprocess.run(tabserve_cmd("keys", "hash", "tsk_abc"), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(b"tsk_abc").hexdigest()
    out = subprocess.run(tabserve_cmd("keys", "hash"), input="tsk_abc\n", capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == hashlib.sha256(b"tsk_abc").hexdigest()


def test_keys_new_prints_a_key_and_an_entry_the_server_accepts():
    out = subprocess.run(tabserve_cmd("keys", "new", "--name", "ops", "--scopes", "predict,admin"),
                         capture_output=True, text=True, check=True)
    lines = dict(line.split(":", 1) for line in out.stdout.strip().splitlines())
    key, entry = lines["key"].strip(), json.loads(lines["entry"])
    assert key.startswith("tsk_") and len(key) > 40
    assert entry == {"name": "ops", "sha256": hash_key(key), "scopes": ["predict", "admin"]}
    assert key not in json.dumps(entry)
    assert KeyRing(parse_api_keys(json.dumps([entry]))).find(key).name == "ops"


def test_serve_refuses_a_bad_configuration_before_starting(tmp_path):
    out = subprocess.run(tabserve_cmd("serve", str(tmp_path), "--cors-origins", "*", "--no-pretrain"),
                         env={**os.environ, "TABSERVE_CORS_ALLOW_CREDENTIALS": "true"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "tabserve serve: error: cors_origins '*' with cors_allow_credentials" in out.stderr
