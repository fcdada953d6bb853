"""Model lifecycle over HTTP: traffic policies (A/B, shadow) and reloads. The routes that change what is served
carry the admin gate (api/admin_gate.py): off unless API keys or ``admin_routes=on``, the admin scope, no CSRF."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tabserve.api.admin_gate import admin_gate
from tabserve.api.body import read_body
from tabserve.api.errors import error_response
from tabserve.api.exposure import ModelRoots
from tabserve.api.openapi import body_doc
from tabserve.core.quoting import quoted
from tabserve.errors import BundleError, InvalidInput, RegistryUnavailable, TabserveError
from tabserve.registry import variant_uri
from tabserve.serving.manager import ModelManager
from tabserve.serving.traffic import PRIMARY, TrafficPolicy
from tabserve.settings import Settings

_ERRORS = {404: {"description": "Unknown model"}, 422: {"description": "Invalid policy, or the load failed (the "
                                                               "old version keeps serving)"}}


def _json(value: object) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


class AdminEndpoints:
    def __init__(self, manager: ModelManager, settings: Settings, roots: ModelRoots | None = None) -> None:
        self.manager = manager
        self.settings = settings
        self.roots = roots or ModelRoots.from_settings(settings)

    async def traffic(self) -> Response:
        return _json(self.manager.traffic.describe())

    async def set_traffic(self, request: Request, name: str) -> Response:
        try:
            body = await read_body(request, self.settings.max_body_bytes)
            try:
                raw = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
            policy = TrafficPolicy.parse(raw, name)
            self._check_sources(name, policy)
            await apply_policy(self.manager, name, policy)
        except TabserveError as exc:
            return error_response(exc)
        return _json(self.manager.traffic.describe()[name])

    def _check_sources(self, name: str, policy: TrafficPolicy) -> None:
        """Each variant and the shadow must come from a registry or from inside the model roots."""
        primary = self.manager.slot(name)
        if primary.uri is None:
            return  # set_policy refuses: no source, no variants
        for label in (*policy.variants, *([policy.shadow] if policy.shadow else [])):
            if label != PRIMARY:
                self.roots.check(variant_uri(primary.uri, label), f"traffic variant {quoted(label)}")

    async def clear_traffic(self, name: str) -> Response:
        try:
            self.manager.traffic.set_policy(name, None)
        except TabserveError as exc:
            return error_response(exc)
        return _json(self.manager.traffic.describe()[name])

    async def reload(self, name: str) -> Response:
        """Ask the model's sources now (and load again even a version that failed before)."""
        try:
            self.manager.slot(name)
            results = await self.manager.refresh_async(name, force=True)
        except TabserveError as exc:
            return error_response(exc)
        failed = [(slot, error) for slot, outcome, error in results if outcome == "failed"]
        if failed:
            serving = self.manager.slot(name).model
            keeps = f"; version {serving.version!r} is still served" if serving else ""
            slot, error = failed[0]
            failure = self.manager.slots[slot].last_failure  # the registry down: 503, worth retrying
            kind = RegistryUnavailable if failure is not None and failure.unavailable else BundleError
            return error_response(kind(f"reloading {slot} failed: {error}{keeps}", model=name))
        return _json({"model": name, "reloaded": [{"slot": s, "outcome": o} for s, o, _ in results],
                      "traffic": self.manager.traffic.describe()[name]})


async def apply_policy(manager: ModelManager, name: str, policy: TrafficPolicy | None) -> None:
    """Set ``name``'s policy and load its new variants before returning (each keeps the primary answering
    until it is ready; a variant that fails to load shows its error in the traffic description)."""
    for slot in manager.traffic.set_policy(name, policy):
        await manager.load_slot(slot)


def build_admin_router(ep: AdminEndpoints) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["lifecycle"])
    admin = [admin_gate(ep.settings)]  # the declaration that makes a route an admin route
    router.add_api_route("/traffic", ep.traffic, methods=["GET"],
                         summary="Traffic policies: each model's variants, weights, versions, shadow divergence")
    router.add_api_route("/admin/traffic/{name}", ep.set_traffic, methods=["PUT"], responses=_ERRORS,
                         dependencies=admin, summary="Set a model's A/B variants and shadow (admin)",
                         openapi_extra=body_doc(TrafficPolicy))
    router.add_api_route("/admin/traffic/{name}", ep.clear_traffic, methods=["DELETE"], responses=_ERRORS,
                         dependencies=admin, summary="Back to the primary alone (admin)")
    router.add_api_route("/admin/models/{name}/reload", ep.reload, methods=["POST"], responses=_ERRORS,
                         dependencies=admin,
                         summary="Check the model's alias or folder now and swap in a new version (admin)")
    return router
