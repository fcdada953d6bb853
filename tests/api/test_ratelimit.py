"""Rate limits per API key or client address, in memory or in a real Redis shared by several apps."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

import tabserve
from tabserve.api.auth import hash_key
from tabserve.errors import ConfigError
from tests.servers import free_port

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
KEYS = json.dumps([
    {"name": "alice", "sha256": hash_key("tsk_alice"), "scopes": ["predict"]},
    {"name": "bob", "sha256": hash_key("tsk_bob"), "scopes": ["predict"], "rate_limit": "2/minute"},
    {"name": "batchjob", "sha256": hash_key("tsk_batch"), "scopes": ["predict"], "rate_limit": "none"},
])
PROBES = ["/healthz", "/readyz", "/api/v1/predict/health", "/v2/health/live", "/v2/health/ready", "/metrics"]


def v2_body(rows: int) -> dict:
    return {"inputs": [{"name": "X", "shape": [rows, 5], "datatype": "FP32", "data": ROW * rows}]}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free 127.0.0.1 port, nothing written to disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url = request.getfixturevalue("redis_url")
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def rate(r: httpx.Response) -> tuple[str, str, str]:
    return r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"], r.headers["RateLimit-Policy"]


def test_each_row_counts_and_the_limit_answers_429(make_client, demo_model, storage):
    with make_client(demo_model, rate_limit="5/minute", rate_limit_storage=storage) as c:
        r = c.post("/api/v1/predict", json={"data": ROW})
        assert r.status_code == 200 and rate(r) == ("5", "4", "5;w=60")
        assert 0 < int(r.headers["RateLimit-Reset"]) <= 60
        r = c.post("/api/v1/predict/batch", json={"data": [ROW] * 3})
        assert r.status_code == 200 and rate(r)[1] == "1"
        r = c.post("/api/v1/predict", json={"data": ROW})
        assert r.status_code == 200 and rate(r)[1] == "0"
        r = c.post("/api/v1/predict", json={"data": ROW})
        assert r.status_code == 429
        assert 0 < int(r.headers["Retry-After"]) <= 60
        assert rate(r) == ("5", "0", "5;w=60")
        body = r.json()
        assert body["error"] == "rate_limited" and body["limit"] == 5 and body["remaining"] == 0
        assert "rate limit 5/minute reached" in body["detail"]


def test_a_batch_that_does_not_fit_is_refused_but_costs_only_its_request(make_client, demo_model, storage):
    with make_client(demo_model, rate_limit="10/minute", rate_limit_storage=storage) as c:
        assert c.post("/api/v1/predict/batch", json={"data": [ROW] * 4}).status_code == 200
        r = c.post("/api/v1/predict/batch", json={"records": [dict(zip(
            [f"feature_{i}" for i in range(5)], ROW, strict=True))] * 7})
        assert r.status_code == 429
        assert "this request has 7 rows and 5 remain" in r.json()["detail"]
        r = c.post("/api/v1/predict/batch", json={"data": [ROW] * 5})  # 10 - 4 - 1 (the refused request)
        assert r.status_code == 200 and rate(r)[1] == "0"


def test_a_batch_larger_than_the_whole_limit_says_to_split_it(make_client, demo_model):
    with make_client(demo_model, rate_limit="3/minute") as c:
        r = c.post("/api/v1/predict/batch", json={"data": [ROW] * 4})
        assert r.status_code == 429 and "split the batch" in r.json()["detail"]
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 200


def test_v2_inference_counts_its_rows(make_client, demo_model, storage):
    with make_client(demo_model, rate_limit="6/minute", rate_limit_storage=storage) as c:
        r = c.post("/v2/models/demo/infer", json=v2_body(4))
        assert r.status_code == 200 and rate(r)[1] == "2"
        r = c.post("/v2/models/demo/infer", json=v2_body(3))
        assert r.status_code == 429 and "3 rows" in r.json()["error"]
        assert r.headers["Retry-After"]


def test_every_other_request_costs_one(make_client, demo_model):
    with make_client(demo_model, rate_limit="2/minute") as c:
        assert c.get("/api/v1/models").status_code == 200
        assert c.post("/api/v1/predict", json={"oops": 1}).status_code == 422  # bad requests count too
        assert c.get("/v2/models/demo").status_code == 429


@pytest.mark.parametrize("path", PROBES)
def test_probes_and_metrics_are_never_limited(make_client, demo_model, path):
    with make_client(demo_model, rate_limit="1/minute") as c:
        c.post("/api/v1/predict", json={"data": ROW})
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 429
        for _ in range(3):
            r = c.get(path)
            assert r.status_code == 200 and "RateLimit-Limit" not in r.headers


def test_each_key_has_its_own_budget_and_may_have_its_own_limit(make_client, demo_model, storage):
    with make_client(demo_model, api_keys=KEYS, rate_limit="3/minute", rate_limit_storage=storage) as c:
        alice, bob, job = ({"X-API-Key": k} for k in ("tsk_alice", "tsk_bob", "tsk_batch"))
        assert c.post("/api/v1/predict/batch", json={"data": [ROW] * 3}, headers=alice).status_code == 200
        assert c.post("/api/v1/predict", json={"data": ROW}, headers=alice).status_code == 429
        r = c.post("/api/v1/predict", json={"data": ROW}, headers=bob)
        assert r.status_code == 200 and rate(r) == ("2", "1", "2;w=60")
        assert c.post("/api/v1/predict", json={"data": ROW}, headers=bob).status_code == 200
        assert c.post("/api/v1/predict", json={"data": ROW}, headers=bob).status_code == 429
        for _ in range(3):  # "none": this key is not limited
            r = c.post("/api/v1/predict/batch", json={"data": [ROW] * 50}, headers=job)
            assert r.status_code == 200 and "RateLimit-Limit" not in r.headers


def test_without_keys_each_client_address_has_its_own_budget(demo_model):
    app = tabserve.create_app(tabserve.Settings(rate_limit="2/minute", access_log=False), model=demo_model)

    async def run() -> list[int]:
        statuses = []
        for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"):
            transport = httpx.ASGITransport(app=app, client=(address, 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://tabserve") as client:
                r = await client.post("/api/v1/predict", json={"data": ROW})
                statuses.append(r.status_code)
        return statuses

    assert asyncio.run(run()) == [200, 200, 200, 429, 200]


def test_guessing_keys_is_limited_by_address(make_client, demo_model):
    with make_client(demo_model, api_keys=KEYS, rate_limit="3/minute") as c:
        codes = [c.post("/api/v1/predict", json={"data": ROW}, headers={"X-API-Key": f"tsk_guess{i}"}).status_code
                 for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        assert c.post("/api/v1/predict", json={"data": ROW}, headers={"X-API-Key": "tsk_alice"}).status_code == 200


def test_replicas_sharing_redis_share_the_limit(demo_model, redis_url):
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    settings = tabserve.Settings(rate_limit="5/minute", rate_limit_storage=redis_url, api_keys=KEYS,
                                 access_log=False)
    from fastapi.testclient import TestClient

    headers = {"X-API-Key": "tsk_alice"}
    with TestClient(tabserve.create_app(settings, model=demo_model)) as a, \
            TestClient(tabserve.create_app(settings, model=demo_model)) as b:
        assert a.post("/api/v1/predict/batch", json={"data": [ROW] * 3}, headers=headers).status_code == 200
        r = b.post("/api/v1/predict/batch", json={"data": [ROW] * 2}, headers=headers)
        assert r.status_code == 200 and rate(r)[1] == "0"
        assert a.post("/api/v1/predict", json={"data": ROW}, headers=headers).status_code == 429
        assert b.post("/api/v1/predict", json={"data": ROW}, headers=headers).status_code == 429


def test_an_unreachable_redis_lets_requests_through(make_client, demo_model, capfd):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with make_client(demo_model, rate_limit="1/minute", rate_limit_storage=dead) as c:
        t0 = time.monotonic()
        codes = [c.post("/api/v1/predict", json={"data": ROW}).status_code for _ in range(5)]
        assert codes == [200] * 5
        assert time.monotonic() - t0 < 5
    assert "rate_limit_storage_failed" in capfd.readouterr().out


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"rate_limit": "lots"}, "is not a rate limit"),
    ({"rate_limit": "0/second"}, "allows nothing"),
    ({"rate_limit": "10/second;100/minute"}, "holds 2 limits"),
    ({"rate_limit": "10/second", "rate_limit_storage": "memcached://x"}, "use memory:// or redis://"),
])
def test_bad_limits_refuse_to_start(demo_model, settings, fragment):
    with pytest.raises(ConfigError) as info:
        tabserve.create_app(tabserve.Settings(access_log=False, **settings), model=demo_model)
    assert fragment in str(info.value)


def test_refusals_are_counted_in_the_metrics(make_client, demo_model):
    with make_client(demo_model, rate_limit="1/minute", api_keys=KEYS) as c:
        for _ in range(2):
            c.post("/api/v1/predict", json={"data": ROW}, headers={"X-API-Key": "tsk_alice"})
        for i in range(3):  # 1/minute per address for failed guesses too
            c.post("/api/v1/predict", json={"data": ROW}, headers={"X-API-Key": f"tsk_guess{i}"})
        text = c.get("/metrics").text
    assert 'tabserve_rate_limited_total{key_kind="api_key"} 1.0' in text
    assert 'tabserve_rate_limited_total{key_kind="ip"} 2.0' in text
