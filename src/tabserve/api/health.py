"""Liveness and readiness probes: never shed, never blocked by the model."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from tabserve.api.routes import Route
from tabserve.serving.facade import ServedModels


class HealthEndpoints:
    def __init__(self, models: ServedModels) -> None:
        self.models = models

    async def live(self) -> Response:
        return Response(b'{"status":"alive"}', media_type="application/json")

    async def ready(self) -> Response:
        models = self.models
        model = models.model
        if models.draining:  # asked to stop: take this instance out of rotation, in-flight requests finish
            body = {"status": "draining", "error": "the server is shutting down"}
        elif model is not None and models.ready:
            body = {"status": "ready", "model": model.name, "model_version": model.version}
            return Response(orjson.dumps(body), media_type="application/json")
        else:
            waiting = models.waiting()
            if model is not None and waiting is not None:  # the default is ready, another served model is not
                name, state, why = waiting
                body = {"status": state, "model": name, "error": why}
            else:
                failure = models.last_failure
                body = {"status": models.state, "error": failure.message if failure else None}
        return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                        headers={"Retry-After": "1"})

    def routes(self) -> list[Route]:
        tags = ["health"]
        return [
            Route("GET", "/healthz", "probe", self.live, doc={'summary': "Liveness: the process answers", 'tags': tags}),
            Route("GET", "/readyz", "probe", self.ready, doc={
                'summary': "Readiness: a model is loaded and warmed", 'tags': tags,
                'responses': {503: {"description": "No model is ready (loading or failed), or the server is "
                                                "shutting down"}}}),
        ]
