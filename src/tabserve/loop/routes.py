"""``POST /api/v1/feedback`` and ``GET /api/v1/models/{name}/quality``: thin HTTP over feedback.py and
quality.py. Both do their file work in a worker thread, never on the event loop."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tabserve.core.model import Model
from tabserve.errors import ConfigError, InvalidInput, ModelNotFound, PayloadTooLarge
from tabserve.loop.service import LoopService
from tabserve.settings import Settings

FEEDBACK_PATH = "/api/v1/feedback"
QUALITY_PATH = "/api/v1/models/{name}/quality"
MAX_UNKNOWN_LISTED = 100
OFF = ("the payload log is off on this server, so it keeps no predictions to join labels with: start it with "
       "--payload-log DIR (TABSERVE_PAYLOAD_LOG_DIR)")


class LoopEndpoints:
    def __init__(self, service: LoopService | None, settings: Settings, resolve: Callable[[str | None], Model],
                 served: Callable[[], list[str]]) -> None:
        self.service = service
        self.settings = settings
        self.resolve = resolve  # a served model by name, None = the default one (raises ModelNotFound)
        self.served = served

    async def feedback(self, request: Request) -> Response:
        service = self._service()
        body = await _read_json(request, self.settings.max_body_bytes)
        name = body.get("model") if isinstance(body, dict) else None
        if name is not None and not isinstance(name, str):
            raise InvalidInput(f"'model' must be a served model's name; got {type(name).__name__}")
        model = self.resolve(name)
        answer = await run_in_threadpool(self._store_feedback, service, model, body)
        return Response(orjson.dumps(answer), media_type="application/json")

    def _store_feedback(self, service: LoopService, model: Model, body: object) -> dict:
        from tabserve.loop.feedback import append_feedback, parse_feedback

        labels = parse_feedback(body, model, self.settings.max_batch_rows)
        append_feedback(service.store, model, labels)
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.settings.quality_window_s)).date()
        ids = {x.request_id for x in labels}
        ids -= service.log.known(ids)
        unknown = sorted(ids - service.quality.reader.known(model.name, ids, since))
        return {"model": model.name, "accepted": len(labels), "unknown": unknown[:MAX_UNKNOWN_LISTED],
                "unknown_count": len(unknown)}

    async def quality(self, request: Request, name: str) -> Response:
        from tabserve.loop.quality import parse_since

        since = request.query_params.get("since")
        service = self._service()
        start = parse_since(since, self.settings.quality_window_s)
        if name not in self.served() and name not in service.store.models():  # never a path from the client
            raise ModelNotFound(f"model {name[:64]!r} is neither served here nor in the payload log")
        report = await run_in_threadpool(service.quality.report, name, start)
        return Response(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    def routes(self) -> list:
        """The two routes, for the server's route table: feedback needs the predict scope (it is sent by
        whoever predicts), quality the read scope of model listings."""
        from tabserve.api.routes import Route

        return [Route("POST", FEEDBACK_PATH, "predict", self.feedback, doc={
                    "summary": "Ground-truth labels for earlier predictions, by request id", "tags": ["loop"]}),
                Route("GET", QUALITY_PATH, "read", self.quality, doc=_quality_doc())]

    def _service(self) -> LoopService:
        if self.service is None:
            raise ConfigError(OFF)
        return self.service


async def _read_json(request: Request, limit: int) -> object:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the feedback body is over {limit} bytes (MAX_BODY_BYTES); send fewer labels "
                                  "per request")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None


def _quality_doc() -> dict:
    return {"summary": "Live quality from feedback, per version and A/B variant", "tags": ["loop"],
            "openapi_extra": {"parameters": [{"name": "since", "in": "query", "required": False,
                                              "schema": {"type": "string"},
                                              "description": "24h, 7d, or an ISO date/time (default: "
                                                             "QUALITY_WINDOW_S back)"}]}}
