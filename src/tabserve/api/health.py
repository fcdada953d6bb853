"""Liveness and readiness probes: never shed, never blocked by the model."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from tabserve.serving.manager import ModelManager


def build_health_router(manager: ModelManager) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def live() -> Response:
        return Response(b'{"status":"alive"}', media_type="application/json")

    @router.get("/readyz", summary="Readiness: a model is loaded and warmed",
                responses={503: {"description": "No model is ready (loading or failed), or the server is "
                                            "shutting down"}})
    async def ready() -> Response:
        model = manager.model
        if manager.draining:  # asked to stop: take this instance out of rotation, in-flight requests finish
            body = {"status": "draining", "error": "the server is shutting down"}
        elif model is not None and manager.ready:
            body = {"status": "ready", "model": model.name, "model_version": model.version}
            return Response(orjson.dumps(body), media_type="application/json")
        else:
            waiting = [n for n in manager.names if manager.slots[n].model is None]
            if model is not None and waiting:  # the default is ready, another served model is not
                slot = manager.slots[waiting[0]]
                body = {"status": slot.state, "model": waiting[0], "error": slot.not_ready_reason()}
            else:
                failure = manager.last_failure
                body = {"status": manager.state, "error": failure.message if failure else None}
        return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                        headers={"Retry-After": "1"})

    return router
