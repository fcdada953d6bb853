"""Model lifecycle over HTTP: traffic policies (A/B, shadow) and reloads. The routes that change what is served
carry the admin gate (api/admin_gate.py): off unless API keys or ``admin_routes=on``, the admin scope, no CSRF."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tabserve.api.body import read_body
from tabserve.api.errors import error_response
from tabserve.api.exposure import ModelRoots
from tabserve.api.openapi import body_doc
from tabserve.api.routes import Route
from tabserve.core.quoting import quoted
from tabserve.errors import InvalidInput, TabserveError
from tabserve.registry import variant_uri
from tabserve.serving.facade import ServedModels
from tabserve.serving.traffic import PRIMARY, TrafficPolicy
from tabserve.settings import Settings

_ERRORS = {404: {"description": "Unknown model"}, 422: {"description": "Invalid policy, or the load failed (the "
                                                               "old version keeps serving)"}}


def _json(value: object) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


class AdminEndpoints:
    def __init__(self, models: ServedModels, settings: Settings, roots: ModelRoots | None = None) -> None:
        self.models = models
        self.settings = settings
        self.roots = roots or ModelRoots.from_settings(settings)

    async def traffic(self) -> Response:
        return _json(self.models.traffic())

    async def set_traffic(self, request: Request, name: str) -> Response:
        try:
            body = await read_body(request, self.settings.max_body_bytes)
            try:
                raw = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
            policy = TrafficPolicy.parse(raw, name)
            self._check_sources(name, policy)
            await self.models.set_traffic(name, policy)
        except TabserveError as exc:
            return error_response(exc)
        return _json(self.models.traffic(name))

    def _check_sources(self, name: str, policy: TrafficPolicy) -> None:
        """Each variant and the shadow must come from a registry or from inside the model roots."""
        uri = self.models.source_of(name)
        if uri is None:
            return  # set_policy refuses: no source, no variants
        for label in (*policy.variants, *([policy.shadow] if policy.shadow else [])):
            if label != PRIMARY:
                self.roots.check(variant_uri(uri, label), f"traffic variant {quoted(label)}")

    async def clear_traffic(self, name: str) -> Response:
        try:
            await self.models.set_traffic(name, None)
        except TabserveError as exc:
            return error_response(exc)
        return _json(self.models.traffic(name))

    async def reload(self, name: str) -> Response:
        """Ask the model's sources now (and load again even a version that failed before)."""
        try:
            return _json(await self.models.reload(name))
        except TabserveError as exc:
            return error_response(exc)

    def routes(self) -> list[Route]:
        tags = ["lifecycle"]
        return [
            Route("GET", "/api/v1/traffic", "read", self.traffic, doc={
                "summary": "Traffic policies: each model's variants, weights, versions, shadow divergence", "tags": tags}),
            Route("PUT", "/api/v1/admin/traffic/{name}", "admin", self.set_traffic, doc={
                "responses": _ERRORS, "summary": "Set a model's A/B variants and shadow (admin)",
                "openapi_extra": body_doc(TrafficPolicy), "tags": tags}),
            Route("DELETE", "/api/v1/admin/traffic/{name}", "admin", self.clear_traffic, doc={
                "responses": _ERRORS, "summary": "Back to the primary alone (admin)", "tags": tags}),
            Route("POST", "/api/v1/admin/models/{name}/reload", "admin", self.reload, doc={
                "responses": _ERRORS, "tags": tags,
                "summary": "Check the model's alias or folder now and swap in a new version (admin)"}),
        ]
