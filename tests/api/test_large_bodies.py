"""Large bodies: batches over max_batch_rows refused before they are parsed, and the in-flight body budget."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

import tabserve
from tabserve.protocol import v1 as v1_protocol
from tabserve.protocol import v2 as v2_protocol

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
ROWS = 10**6
V1_BATCH = "/api/v1/predict/batch"
V2_URL = "/v2/models/demo/infer"
LIMIT_MESSAGE = "1000000 rows; the limit is 10000 rows per request (max_batch_rows)"


def nested_rows(rows: int = ROWS) -> bytes:
    return b",".join([b"[1,2,3,4,5]"] * rows)


@pytest.fixture
def parsed(monkeypatch) -> list[int]:
    """The sizes of the JSON texts the v1 and v2 protocols hand to orjson (the real one)."""
    sizes: list[int] = []

    class Spy:
        JSONDecodeError = orjson.JSONDecodeError

        @staticmethod
        def loads(text):
            sizes.append(len(text))
            return orjson.loads(text)

        def __getattr__(self, name):
            return getattr(orjson, name)

    monkeypatch.setattr(v1_protocol, "orjson", Spy())
    monkeypatch.setattr(v2_protocol, "orjson", Spy())
    return sizes


# -- the row limit, before parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["data", "records"])
def test_a_v1_batch_of_a_million_rows_is_refused_unparsed(client, parsed, field):
    row = b"[1,2,3,4,5]" if field == "data" else b'{"a":1}'
    body = b'{"%s":[' % field.encode() + b",".join([row] * ROWS) + b"]}"
    r = client.post(V1_BATCH, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"'{field}' has {LIMIT_MESSAGE}: split the batch"
    assert r.json()["limit"] == 10_000
    assert not [size for size in parsed if size > 100_000]  # the 12 MB body never reached the parser
    assert client.post("/api/v1/predict", json={"data": ROW}).status_code == 200


def test_a_v1_batch_just_over_the_limit_names_it_too(make_client, demo_model):
    with make_client(demo_model, max_batch_rows=10) as c:
        r = c.post(V1_BATCH, json={"data": [ROW] * 11})
        assert r.status_code == 422
        assert "'data' has 11 rows; the limit is 10 rows per request (max_batch_rows)" in r.json()["detail"]
        assert c.post(V1_BATCH, json={"data": [ROW] * 10}).status_code == 200


def test_one_row_endpoint_refuses_a_million_rows_unparsed(client, parsed):
    body = b'{"data":[' + nested_rows() + b"]}"
    r = client.post("/api/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "'data' has 1000000 rows; this endpoint takes one row" in r.json()["detail"]
    assert not [size for size in parsed if size > 100_000]


def test_rows_hidden_elsewhere_in_the_body_are_refused_unparsed(client, parsed):
    # one valid row, and a million more in a field the endpoint would ignore, or nested inside a value
    for body in (b'{"data":[[1,2,3,4,5]],"extra":[' + nested_rows() + b"]}",
                 b'{"data":[[1,2,3,4,[' + nested_rows() + b"]]]}"):
        r = client.post(V1_BATCH, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "JSON arrays and objects" in detail and "more than 10000 rows (max_batch_rows) of 5 features" \
            in detail
    assert not [size for size in parsed if size > 100_000]


def test_brackets_commas_and_quotes_inside_strings_are_not_rows(make_client, demo_model):
    # A field the endpoint ignores, full of JSON syntax inside one string: counted as text, not as rows.
    noise = '[{,"\\"' * 2000 + "\\\\"
    with make_client(demo_model, max_batch_rows=5) as c:
        r = c.post(V1_BATCH, content=orjson.dumps({"note": noise, "data": [ROW] * 5, "tail": "]}"}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == 5
        r = c.post(V1_BATCH, content=orjson.dumps({"note": noise, "data": [ROW] * 6}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 422
        assert "'data' has 6 rows; the limit is 5 rows per request (max_batch_rows)" in r.json()["detail"]


def test_a_large_valid_batch_is_still_scored(make_client, demo_model):
    # 10,000 rows of 17-digit numbers: 2 MB, the most a request may hold
    rows = np.random.default_rng(0).uniform(0, 1, size=(10_000, 5)).tolist()
    with make_client(demo_model) as c:
        r = c.post(V1_BATCH, content=orjson.dumps({"data": rows}), headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["rows"] == 10_000


@pytest.mark.parametrize("nested", [False, True])
def test_a_v2_json_request_of_a_million_rows_is_refused_unparsed(client, parsed, nested):
    data = nested_rows() if nested else b",".join([b"1,2,3,4,5"] * ROWS)
    body = b'{"inputs":[{"name":"X","shape":[%d,5],"datatype":"FP32","data":[%s]}]}' % (ROWS, data)
    r = client.post(V2_URL, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert LIMIT_MESSAGE in r.json()["error"]
    assert not [size for size in parsed if size > 100_000]


def test_a_v2_request_over_the_limit_is_refused_by_its_shape(make_client, demo_model):
    with make_client(demo_model, max_batch_rows=10) as c:
        r = c.post(V2_URL, json={"inputs": [{"name": "X", "shape": [11, 5], "datatype": "FP32",
                                             "data": ROW * 11}]})
        assert r.status_code == 400
        assert r.json()["error"] == ("input 'X' has 11 rows; the limit is 10 rows per request (max_batch_rows): "
                                     "split the batch")


def test_a_binary_tensor_over_the_limit_is_refused_before_its_data_is_read(client):
    # The header declares a million rows; the binary part is a stub of 40 bytes. Reading it would have failed on
    # its size: the refusal names the rows, so the binary part was never touched.
    header = orjson.dumps({"inputs": [{"name": "X", "shape": [ROWS, 5], "datatype": "FP32",
                                       "parameters": {"binary_data_size": ROWS * 20}}]})
    r = client.post(V2_URL, content=header + b"\0" * 40,
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400
    assert r.json()["error"] == f"input 'X' has {LIMIT_MESSAGE}: split the batch"


def test_a_full_binary_tensor_over_the_limit_is_refused(make_client, demo_model):
    raw = np.ones((ROWS, 5), dtype="<f4").tobytes()
    header = orjson.dumps({"inputs": [{"name": "X", "shape": [ROWS, 5], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}]})
    with make_client(demo_model, max_body_bytes=32 * 1024 * 1024) as c:
        r = c.post(V2_URL, content=header + raw, headers={"Inference-Header-Content-Length": str(len(header))})
        assert r.status_code == 400 and LIMIT_MESSAGE in r.json()["error"]


def test_explain_names_its_own_row_limit(client, parsed):
    body = b'{"data":[' + nested_rows() + b"]}"
    r = client.post("/api/v1/explain", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert "'data' has 1000000 rows; the limit is 1000 rows per request (explain_max_rows)" in r.json()["detail"]
    assert not [size for size in parsed if size > 100_000]


async def _stream(app, path: str, body: bytes, piece: int = 65536,
                  extra_headers: list | None = None) -> tuple[int, dict, int]:
    """``body`` sent as a server hands it over, ``piece`` bytes a message: (status, answer, bytes the app read)."""
    read = 0
    answer: dict = {}

    async def receive() -> dict:
        nonlocal read
        chunk = body[read:read + piece]
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read < len(body)}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    scope = _scope(path, len(body))
    scope["headers"] += extra_headers or []
    await app(scope, receive, send)
    return answer["status"], orjson.loads(answer["body"]), read


@pytest.mark.parametrize(("path", "key"), [(V1_BATCH, "detail"), ("/api/v1/predict", "detail"),
                                           ("/api/v1/explain", "detail")])
def test_a_streamed_batch_is_refused_after_its_first_megabyte(demo_model, path, key):
    app = _app(demo_model)
    body = b'{"data":[' + nested_rows() + b"]}"
    status, answer, read = asyncio.run(_stream(app, path, body))
    assert status == 422
    assert read <= 2 * 1024 * 1024 < len(body)  # the other 10 MB were never read
    detail = answer[key]
    assert "'data' has " in detail and " rows in the first " in detail and " bytes of the body already" in detail
    assert int(detail.split("'data' has ")[1].split(" ")[0]) > 10_000
    expected = {V1_BATCH: "the limit is 10000 rows per request (max_batch_rows)",
                "/api/v1/predict": "this endpoint takes one row",
                "/api/v1/explain": "the limit is 1000 rows per request (explain_max_rows)"}[path]
    assert expected in detail


def test_a_streamed_v2_request_is_refused_after_its_first_megabyte(demo_model):
    app = _app(demo_model, max_body_bytes=32 * 1024 * 1024)
    json_body = b'{"id":"x","inputs":[{"name":"X","shape":[%d,5],"datatype":"FP32","data":[%s]}]}' % (
        ROWS, b",".join([b"1,2,3,4,5"] * ROWS))
    header = orjson.dumps({"inputs": [{"name": "X", "shape": [ROWS, 5], "datatype": "FP32",
                                       "parameters": {"binary_data_size": ROWS * 20}}]})
    binary_body = header + np.ones((ROWS, 5), dtype="<f4").tobytes()
    for body, extra in ((json_body, []), (binary_body, [(b"inference-header-content-length",
                                                        str(len(header)).encode())])):
        status, answer, read = asyncio.run(_stream(app, V2_URL, body, extra_headers=extra))
        assert status == 400
        assert read <= 2 * 1024 * 1024 < len(body)
        assert LIMIT_MESSAGE in answer["error"]


def test_a_shape_elsewhere_than_an_input_is_not_its_rows(demo_model):
    # 'shape' inside an input's parameters (or any string) says nothing about rows: peeked at, let through
    rows = np.random.default_rng(2).uniform(0, 1, size=(10_000, 5)).reshape(-1).tolist()
    body = orjson.dumps({"parameters": {"note": '{"shape":[99999999]'},
                         "inputs": [{"name": "X", "parameters": {"shape": [99999999, 5]}, "shape": [10_000, 5],
                                     "datatype": "FP64", "data": rows}]}, option=orjson.OPT_INDENT_2)
    assert len(body) > 1024 * 1024
    status, answer, read = asyncio.run(_stream(_app(demo_model), V2_URL, body))
    assert status == 200, answer
    assert answer["outputs"][0]["shape"][0] == 10_000 and read == len(body)


def test_a_streamed_batch_within_the_limit_is_read_whole_and_scored(demo_model):
    rows = np.random.default_rng(1).uniform(0, 1, size=(10_000, 5)).tolist()
    body = orjson.dumps({"data": rows}, option=orjson.OPT_INDENT_2)
    assert len(body) > 1024 * 1024  # peeked at after 1 MiB, and let through
    status, answer, read = asyncio.run(_stream(_app(demo_model), V1_BATCH, body))
    assert status == 200 and answer["rows"] == 10_000 and read == len(body)


# -- the count on raw bytes is exact ---------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list('[]{},:"\\ab é\n\t') + ["\u2028", "\x00"]), max_size=12)
_SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | _TEXT
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                     max_leaves=30)


def _truth(value) -> tuple[int, int]:
    """(arrays and objects, commas) of ``value`` as JSON."""
    if isinstance(value, list | dict):
        items = list(value.values()) if isinstance(value, dict) else value
        inner = [_truth(v) for v in items]
        return 1 + sum(c for c, _ in inner), max(len(items) - 1, 0) + sum(k for _, k in inner)
    return 0, 0


@settings(max_examples=300, deadline=None)
@given(document=st.dictionaries(_TEXT, _JSON, max_size=4), rows=st.lists(_JSON, max_size=6),
       ascii_only=st.booleans(), indent=st.booleans())
def test_the_byte_count_matches_the_parsed_document(document, rows, ascii_only, indent):
    from tabserve.protocol import json_scan

    document = {**document, "data": rows}
    body = json.dumps(document, ensure_ascii=ascii_only, indent=1 if indent else None).encode()
    counts = json_scan.count(body)
    assert counts is not None
    assert (counts.containers, counts.commas) == _truth(document)
    assert counts.items.get("data", 0) == sum(isinstance(r, list | dict) for r in rows)
    assert orjson.loads(body) == document


def test_the_byte_count_carries_strings_and_depth_across_slices():
    from tabserve.protocol import json_scan

    # strings that open just before a 256 KiB slice boundary and close after it, escapes across it, rows after
    document = {"note": "x" * (2**18 - 12) + '"[{,\\' * 5, "data": [[1, "a]\"", 3]] * 70_000,
                "more": ['],"{' * 70_000, {"k": [[]] * 3}]}
    body = orjson.dumps(document)
    counts = json_scan.count(body)
    assert counts is not None and len(body) > 4 * 2**18
    assert (counts.containers, counts.commas) == _truth(document)
    assert counts.items == {"data": 70_000, "more": 1}


# -- the in-flight body budget --------------------------------------------------------------------------------

BIG = orjson.dumps({"data": [ROW] * 3000})  # ~70 KB: over inline_max_bytes, under max_batch_rows


def _scope(path: str, length: int | None) -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}


async def _held(app, release: asyncio.Event, statuses: list[int], body: bytes = BIG, path: str = V1_BATCH,
                chunked: bool = False, disconnect: bool = False) -> None:
    """A request whose body arrives only once ``release`` is set (in 8 KB chunks when ``chunked``; a disconnect
    after the first chunk when ``disconnect``)."""
    parts = [body[i:i + 8192] for i in range(0, len(body), 8192)] if chunked or disconnect else [body]
    sent = 0

    async def receive() -> dict:
        nonlocal sent
        if sent == 0:
            await release.wait()
        if disconnect and sent == 1:
            await asyncio.sleep(0)
            return {"type": "http.disconnect"}
        sent += 1
        return {"type": "http.request", "body": parts[sent - 1], "more_body": sent < len(parts)}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path, None if chunked else len(body)), receive, send)


def _app(demo_model, **settings) -> FastAPI:
    return tabserve.create_app(tabserve.Settings(access_log=False, **settings), model=demo_model)


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tabserve")


def test_the_budget_refuses_the_next_large_body_with_503_and_accepts_again_after(demo_model):
    app = _app(demo_model, max_inflight_body_bytes=3 * len(BIG))

    async def run() -> None:
        release, held = asyncio.Event(), []
        tasks = [asyncio.create_task(_held(app, release, held)) for _ in range(3)]
        await asyncio.sleep(0.05)
        async with _client(app) as client:
            r = await client.post(V1_BATCH, content=BIG, headers={"Content-Type": "application/json"})
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert r.json()["error"] == "overloaded" and r.json()["limit"] == 3 * len(BIG)
            assert "max_inflight_body_bytes" in r.json()["detail"]
            r = await client.post(V2_URL, content=orjson.dumps({"inputs": [{"name": "X", "shape": [3000, 5],
                                                                            "datatype": "FP32",
                                                                            "data": ROW * 3000}]}))
            assert r.status_code == 503 and "max_inflight_body_bytes" in r.json()["error"]
            r = await client.post("/api/v1/explain", content=BIG, headers={"Content-Type": "application/json"})
            assert r.status_code == 503 and "max_inflight_body_bytes" in r.json()["detail"]
            # one-row traffic is never shed by large bodies
            assert (await client.post("/api/v1/predict", json={"data": ROW})).status_code == 200
            assert (await client.post(V2_URL, json={"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32",
                                                                "data": ROW}]})).status_code == 200
            release.set()
            await asyncio.gather(*tasks)
            assert held == [200, 200, 200]
            r = await client.post(V1_BATCH, content=BIG, headers={"Content-Type": "application/json"})
            assert r.status_code == 200 and r.json()["rows"] == 3000
            assert 'tabserve_shed_total{reason="body_budget"} 3.0' in (await client.get("/metrics")).text

    asyncio.run(run())


def test_a_chunked_body_is_charged_as_it_arrives(demo_model):
    app = _app(demo_model, max_inflight_body_bytes=2 * len(BIG) + len(BIG) // 2)

    async def run() -> None:
        release, held, chunked = asyncio.Event(), [], []
        tasks = [asyncio.create_task(_held(app, release, held)) for _ in range(2)]
        await asyncio.sleep(0.05)
        go = asyncio.Event()
        go.set()
        await _held(app, go, chunked, chunked=True)
        assert chunked == [503]  # refused half-way: the first half fitted
        release.set()
        await asyncio.gather(*tasks)
        assert held == [200, 200]
        await _held(app, go, chunked, chunked=True)
        assert chunked == [503, 200]

    asyncio.run(run())


def test_a_lone_body_larger_than_the_budget_passes(demo_model):
    app = _app(demo_model, max_inflight_body_bytes=len(BIG) // 4)

    async def run() -> None:
        async with _client(app) as client:
            r = await client.post(V1_BATCH, content=BIG, headers={"Content-Type": "application/json"})
            assert r.status_code == 200

    asyncio.run(run())


def test_reservations_are_released_after_errors_and_disconnects(demo_model):
    app = _app(demo_model, max_inflight_body_bytes=2 * len(BIG))
    bad_json = BIG[:-1] + b"x"
    too_many = orjson.dumps({"data": [ROW] * 20_000})

    async def run() -> None:
        statuses: list[int] = []
        go = asyncio.Event()
        go.set()
        for _ in range(3):  # each would leak its share; three leaks exhaust the budget
            await _held(app, go, statuses, bad_json)
            await _held(app, go, statuses, too_many)
            await _held(app, go, statuses, BIG, path="/v2/models/demo/infer")  # not a v2 body
            await _held(app, go, statuses, BIG, disconnect=True)
            await _held(app, go, statuses, BIG, path="/v2/models/nothing/infer")  # 404 after reading
        assert statuses == [422, 422, 400, 499, 404] * 3  # 499: the disconnected body is not parsed
        release, held = asyncio.Event(), []
        tasks = [asyncio.create_task(_held(app, release, held)) for _ in range(2)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*tasks)
        assert held == [200, 200]  # the whole budget is free again

    asyncio.run(run())
