"""Which model version answers a request: the URL's model and version, then the traffic policy (A/B, sticky)."""

from __future__ import annotations

from starlette.types import Scope

from tabserve.api.body import header
from tabserve.core.model import Model
from tabserve.serving.facade import PRIMARY, ServedModels

VARIANT_HEADER = "X-Tabserve-Variant"


async def select_model(models: ServedModels, scope: Scope, name: str | None, version: str | None) -> Model:
    """The model for ``name`` (None: the default model) at ``version`` (None: as routed). Records the model,
    version and A/B variant in the request state, for the access log, metrics and the variant header."""
    if version is None:
        return route_model(models, scope, name)
    assert name is not None
    model = await models.version(name, version)
    state = scope.setdefault("state", {})
    state["model"], state["model_version"] = model.name, model.version
    return model


def route_model(models: ServedModels, scope: Scope, name: str | None) -> Model:
    """``select_model`` without a pinned version: no await (the data plane's usual request)."""
    model, label = models.route(name, None, lambda key: header(scope, key))
    state = scope.setdefault("state", {})
    state["model"], state["model_version"] = model.name, model.version
    if label is not None:
        state["variant"] = label
    return model


def variant_headers(scope: Scope) -> dict[str, str] | None:
    label = scope.get("state", {}).get("variant")
    return {VARIANT_HEADER: label} if label is not None else None


__all__ = ["PRIMARY", "VARIANT_HEADER", "select_model", "variant_headers"]
