"""A client that goes away in the middle of its body: what arrived is never scored as if it were the whole."""

from __future__ import annotations

import asyncio

import orjson
import pytest

import tabserve


def _send_partial(app, path: str, body: bytes, declared: int) -> list[dict]:
    """Drive the ASGI app directly: the first part of the body, then the client disconnects."""
    messages = [{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(declared).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    return sent


@pytest.mark.parametrize("path", ["/api/v1/predict/batch", "/v2/models/demo/infer"])
def test_a_body_cut_short_by_a_disconnect_is_not_scored(demo_model: tabserve.Model, path: str):
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)
    if path.startswith("/v2"):
        whole = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP64", "shape": [2, 5],
                                          "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5]}]})
    else:
        whole = orjson.dumps({"data": [[0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]]})
    sent = _send_partial(app, path, whole[:25], len(whole))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 499  # nginx's "client closed request", for the log and the metrics
    body = orjson.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    text = body.get("detail") or body.get("error")
    assert f"after 25 of {len(whole)} bytes" in text
