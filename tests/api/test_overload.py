"""Overload and hostile bodies: compressed bodies within the size limit, deep JSON, the concurrency limit."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import httpx
import orjson
import pytest

import tabserve

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
V2_URL = "/v2/models/demo/infer"
PROBES = ["/healthz", "/readyz", "/api/v1/predict/health", "/v2/health/live", "/v2/health/ready", "/metrics"]


def v2_body(rows: int = 1) -> dict:
    return {"inputs": [{"name": "X", "shape": [rows, 5], "datatype": "FP32", "data": ROW * rows}]}


# -- compressed bodies ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress),
                                                ("GZip", gzip.compress), ("identity", lambda b: b)])
def test_v1_accepts_compressed_bodies(client, encoding, pack):
    plain = client.post("/api/v1/predict/batch", json={"data": [ROW] * 3}).json()["predictions"]
    body = pack(orjson.dumps({"data": [ROW] * 3}))
    r = client.post("/api/v1/predict/batch", content=body, headers={"Content-Encoding": encoding,
                                                                     "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["predictions"] == plain


def test_v1_refuses_other_encodings_with_415(client):
    r = client.post("/api/v1/predict", content=orjson.dumps({"data": ROW}), headers={"Content-Encoding": "br"})
    assert r.status_code == 415
    assert r.json()["error"] == "unsupported_encoding" and "send gzip, deflate" in r.json()["detail"]


def test_a_corrupt_compressed_body_is_422(client):
    r = client.post("/api/v1/predict", content=b"\x1f\x8b not gzip at all", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 422 and "cannot be decompressed" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/api/v1/predict/batch", V2_URL])
def test_a_gzip_bomb_is_refused_without_inflating_it(make_client, demo_model, path):
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)  # 200 MiB of spaces
    assert len(bomb) < 300 * 1024
    with make_client(demo_model, max_body_bytes=1024 * 1024) as c:
        r = c.post(path, content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413
        assert "decompressed request body is over the limit" in r.text
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 200


def test_a_chunked_v2_body_over_the_limit_is_413(make_client, demo_model):
    big = orjson.dumps(v2_body(200))

    def chunked():
        for i in range(0, len(big), 512):
            yield big[i:i + 512]

    with make_client(demo_model, max_body_bytes=2048) as c:
        r = c.post(V2_URL, content=chunked())
        assert r.status_code == 413 and "limit is 2048 bytes" in r.json()["error"]


# -- deeply nested JSON ------------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(("path", "status", "wrap"), [
    ("/api/v1/predict", 422, lambda d: b'{"data":' + d + b"}"),
    ("/api/v1/predict/batch", 422, lambda d: b'{"data":' + d + b"}"),
    ("/api/v1/predict/batch", 422, lambda d: b'{"records":[{"feature_0":' + d + b"}]}"),
    (V2_URL, 400, lambda d: b'{"inputs":' + d + b"}"),
    ("/v2/repository/index", 400, lambda d: b'{"ready":' + d + b"}"),
])
def test_json_nested_100k_deep_is_refused_cleanly(client, path, status, wrap):
    body = wrap(b"[" * DEEP + b"]" * DEEP)
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    # orjson's own words: "depth limit exceeded" (3.11) or "recursion depth exceeded" (3.10)
    assert "not valid JSON" in r.text and "depth" in r.text and "exceeded" in r.text, r.text
    assert client.post("/api/v1/predict", json={"data": ROW}).status_code == 200


def test_deep_json_in_a_binary_v2_header_is_refused(client):
    header = b'{"inputs":' + b"[" * DEEP + b"]" * DEEP + b"}"
    r = client.post(V2_URL, content=header, headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400


# -- concurrency limit -------------------------------------------------------------------------------------

def _scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80)}


async def _held_request(app, release: asyncio.Event, statuses: list[int]) -> None:
    """A prediction whose body arrives only once ``release`` is set: it stays in flight until then."""
    async def receive() -> dict:
        await release.wait()
        return {"type": "http.request", "body": orjson.dumps({"data": ROW}), "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope("/api/v1/predict"), receive, send)


def test_requests_beyond_the_concurrency_limit_get_503_but_probes_do_not(demo_model):
    app = tabserve.create_app(tabserve.Settings(max_concurrent_requests=2, access_log=False), model=demo_model)

    async def run() -> None:
        release, held = asyncio.Event(), []
        tasks = [asyncio.create_task(_held_request(app, release, held)) for _ in range(2)]
        await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tabserve") as client:
            r = await client.post("/api/v1/predict", json={"data": ROW})
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert r.json()["error"] == "overloaded" and "the limit is 2" in r.json()["detail"]
            r = await client.post(V2_URL, json=v2_body())
            assert r.status_code == 503 and "limit is 2" in r.json()["error"]
            for path in PROBES:
                assert (await client.get(path)).status_code == 200, path
            release.set()
            await asyncio.gather(*tasks)
            assert held == [200, 200]
            assert (await client.post("/api/v1/predict", json={"data": ROW})).status_code == 200
            metrics = (await client.get("/metrics")).text
            assert 'tabserve_shed_total{reason="concurrency"} 2.0' in metrics

    asyncio.run(run())


def test_no_concurrency_limit_by_default(demo_model):
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)

    async def run() -> None:
        release, held = asyncio.Event(), []
        tasks = [asyncio.create_task(_held_request(app, release, held)) for _ in range(50)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks)
        assert held == [200] * 50

    asyncio.run(run())


# -- before the model is ready -------------------------------------------------------------------------------

def test_before_a_model_is_ready_live_is_200_and_ready_and_inference_are_503(make_client, tmp_path):
    with make_client(model_path=tmp_path / "nothing-here") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v2/health/live").status_code == 200
        for path in ("/readyz", "/v2/health/ready"):
            r = c.get(path)
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        r = c.post("/api/v1/predict/batch", json={"data": [ROW]})
        assert r.status_code == 503 and r.json()["error"] == "model_not_ready"
        r = c.post(V2_URL, json=v2_body())
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
