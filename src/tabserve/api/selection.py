"""Which model version answers a request: the URL's model and version, then the traffic policy (A/B, sticky)."""

from __future__ import annotations

from starlette.types import Scope

from tabserve.api.body import header
from tabserve.core.model import Model
from tabserve.serving.manager import ModelManager
from tabserve.serving.traffic import PRIMARY

VARIANT_HEADER = "X-Tabserve-Variant"


async def select_model(manager: ModelManager, scope: Scope, name: str | None, version: str | None) -> Model:
    """The model for ``name`` (None: the default model) at ``version`` (None: as routed). Records the model,
    version and A/B variant in the request state, for the access log, metrics and the variant header."""
    if version is None and not manager.traffic.routes and (name is None or name == manager.default.name):
        model, label = manager.current(), None  # the usual request: the default model, no policy anywhere
    elif version is not None:
        assert name is not None
        model = await manager.version(name, version)
        label = None
    else:
        if name is None:
            name = manager.default.name
            if name is None:  # nothing loaded yet: say why
                return manager.current()
        sticky = manager.traffic.sticky_header(name)
        if sticky is None:  # no policy for this model: two dict lookups
            model, label = manager.slot(name).current(), None
        else:
            model, label = manager.traffic.pick(name, header(scope, sticky))
    state = scope.setdefault("state", {})
    state["model"], state["model_version"] = model.name, model.version
    if label is not None:
        state["variant"] = label
    return model


def variant_headers(scope: Scope) -> dict[str, str] | None:
    label = scope.get("state", {}).get("variant")
    return {VARIANT_HEADER: label} if label is not None else None


__all__ = ["PRIMARY", "VARIANT_HEADER", "select_model", "variant_headers"]
