"""The access log line and the request metrics say what the client got."""

from __future__ import annotations

import asyncio
import io

import orjson

from tabserve.observability.requests import AccessLog, RequestContextMiddleware

SCOPE = {"type": "http", "method": "POST", "path": "/api/v1/predict", "headers": []}


def _logged(app) -> dict:
    out = io.BytesIO()
    middleware = RequestContextMiddleware(app)
    middleware.log = AccessLog(out)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        task = asyncio.ensure_future(middleware(dict(SCOPE), receive, send))
        await asyncio.sleep(0.01)
        if not task.done():
            task.cancel()  # what uvicorn does to requests still running when the shutdown grace ends
        await asyncio.gather(task, return_exceptions=True)
        middleware.log.flush()

    asyncio.run(run())
    return orjson.loads(out.getvalue().splitlines()[0])


def test_a_request_cut_by_the_shutdown_grace_is_logged_503_as_the_transport_answers_it():
    async def never_answers(scope, receive, send) -> None:
        await asyncio.sleep(3600)

    assert _logged(never_answers)["status"] == 503


def test_an_answer_keeps_its_status_and_an_escaping_error_is_logged_500():
    async def answers_418(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def fails(scope, receive, send) -> None:
        raise RuntimeError("a bug")

    assert _logged(answers_418)["status"] == 418
    assert _logged(fails)["status"] == 500
