"""``ServedModels``: all that the HTTP layer may ask of serving, in its own words.

The request path needs a model version, its batcher, a scoring thread and the shadow queue; the probes and the
models endpoints need descriptions; the admin routes need loads, unloads and traffic policies. Everything else
(slots, pins, sources, the loader thread) stays behind this class, so ``api/`` cannot come to depend on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
from tabserve.core.schema import ModelInput
from tabserve.errors import BundleError, ModelNotFound, ModelNotReady, RegistryUnavailable, TabserveError
from tabserve.serving.batcher import MicroBatcher
from tabserve.serving.manager import ModelManager
from tabserve.serving.slot import LoadFailure, State
from tabserve.serving.traffic import PRIMARY, TrafficPolicy


class ServedModels:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self.executor: ThreadPoolExecutor = manager.executor  # large bodies are decoded and scored here

    # -- the request path ----------------------------------------------------------------------------------

    def current(self) -> Model:
        """The default model (``/api/v1/predict``); ``ModelNotReady`` when none is loaded."""
        return self._manager.current()

    def route(self, name: str | None, version: str | None,
              key_of: Callable[[bytes], str | None]) -> tuple[Model, str | None]:
        """The version that answers a request for ``name`` (None: the default model) without a pinned version,
        and its A/B label (None: no policy). ``key_of(header)`` reads the request's sticky key."""
        manager = self._manager
        traffic = manager.traffic
        if not traffic.routes and (name is None or name == manager.default.name):
            return manager.current(), None  # the usual request: the default model, no policy anywhere
        if name is None:
            name = manager.default.name
            if name is None:  # nothing loaded yet: say why
                return manager.current(), None
        sticky = traffic.sticky_header(name)
        if sticky is None:  # no policy for this model: two dict lookups
            return manager.slot(name).current(), None
        return traffic.pick(name, key_of(sticky))

    async def version(self, name: str, version: str) -> Model:
        """A pinned version, loaded on demand (404 unknown, 503 when it exists but fails to load)."""
        return await self._manager.version(name, version)

    def batcher(self, model: Model) -> MicroBatcher:
        return self._manager.batcher(model)

    def shadow(self, answered: Model, x: ModelInput, pred: Prediction) -> None:
        self._manager.traffic.shadow(answered.name, answered, x, pred)

    # -- probes --------------------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._manager.draining

    def drain(self) -> None:
        """Readiness answers 503 from now on; requests in flight finish."""
        self._manager.draining = True

    @property
    def ready(self) -> bool:
        return self._manager.ready

    @property
    def model(self) -> Model | None:
        return self._manager.model

    @property
    def state(self) -> State:
        return self._manager.state

    @property
    def last_failure(self) -> LoadFailure | None:
        return self._manager.last_failure

    @property
    def names(self) -> list[str]:
        return self._manager.names

    def waiting(self) -> tuple[str, State, str] | None:
        """A served model other than the default that has no version yet: (name, state, why)."""
        manager = self._manager
        for name in manager.names:
            slot = manager.slots[name]
            if slot.model is None:
                return name, slot.state, slot.not_ready_reason()
        return None

    def not_ready_reason(self) -> str | None:
        try:
            self._manager.current()
        except ModelNotReady as exc:
            return exc.message
        return None

    def known_name(self) -> str | None:
        """The default model's name, loaded or unloaded."""
        model = self._manager.model
        if model is not None:
            return model.name
        unloaded = self._manager.unloaded
        return unloaded.name if unloaded else None

    # -- descriptions --------------------------------------------------------------------------------------

    def model_info(self, name: str) -> dict[str, Any]:
        """One served model: its manifest, serving state, pinned versions and traffic (404 unknown)."""
        manager = self._manager
        slot = manager.slot(name)
        model = slot.model
        info = model.manifest.model_dump(mode="json") if model is not None else {"name": name}
        if model is not None:
            info["name"], info["version"], info["manifest_version"] = model.name, model.version, \
                model.manifest.version
        info["serving"] = slot.describe()
        info["pinned_versions"] = [m.version for m in manager.pinned if m.name == name]
        info["traffic"] = manager.traffic.describe().get(name)
        return info

    def models_info(self) -> dict[str, Any]:
        return {"models": [self.model_info(n) for n in self._manager.names], "state": self._manager.state}

    def repository(self) -> list[dict[str, Any]]:
        """The v2 repository index: every served model and pinned version with its state."""
        manager = self._manager
        entries = []
        names = manager.names or ([] if manager.unloaded is None else [manager.unloaded.name])
        for name in names:
            slot = manager.slots.get(name, manager.default)
            model, unloaded, failure = slot.model, slot.unloaded, slot.last_failure
            if model is not None:
                entries.append({"name": model.name, "version": model.version, "state": "READY"})
            elif slot.loading:
                entries.append({"name": name, "version": unloaded.version if unloaded else "", "state": "LOADING"})
            elif unloaded is not None:
                reason = f"load failed: {failure.message}" if failure and failure.at > unloaded.at else "unloaded"
                entries.append({"name": unloaded.name, "version": unloaded.version, "state": "UNAVAILABLE",
                                "reason": reason})
            elif failure is not None:
                entries.append({"name": name, "version": failure.version or "", "state": "UNAVAILABLE",
                                "reason": f"load failed: {failure.message}"})
        served = {(e["name"], e["version"]) for e in entries}
        entries += [{"name": m.name, "version": m.version, "state": "READY"} for m in manager.pinned
                    if (m.name, m.version) not in served]
        return entries

    def traffic(self, name: str | None = None) -> dict[str, Any]:
        described = self._manager.traffic.describe()
        return described if name is None else described[name]

    # -- lifecycle (the admin routes) ----------------------------------------------------------------------

    def source_of(self, name: str) -> str | None:
        """The URI ``name`` is served from (404 unknown)."""
        return self._manager.slot(name).uri

    async def set_traffic(self, name: str, policy: TrafficPolicy | None) -> None:
        """Set ``name``'s policy and load its new variants before returning (each keeps the primary answering
        until it is ready; a variant that fails to load shows its error in the traffic description)."""
        manager = self._manager
        for slot in manager.traffic.set_policy(name, policy):
            await manager.load_slot(slot)

    async def reload(self, name: str) -> dict[str, Any]:
        """Ask ``name``'s sources now, loading again even a version that failed before."""
        manager = self._manager
        manager.slot(name)
        results = await manager.refresh_async(name, force=True)
        failed = [(slot, error) for slot, outcome, error in results if outcome == "failed"]
        if failed:
            serving = manager.slot(name).model
            keeps = f"; version {serving.version!r} is still served" if serving else ""
            slot, error = failed[0]
            failure = manager.slots[slot].last_failure  # the registry down: 503, worth retrying
            kind = RegistryUnavailable if failure is not None and failure.unavailable else BundleError
            raise kind(f"reloading {slot} failed: {error}{keeps}", model=name)
        return {"model": name, "reloaded": [{"slot": s, "outcome": o} for s, o, _ in results],
                "traffic": self.traffic(name)}

    def check_known(self, name: str) -> None:
        known = self._manager.names or ([self.known_name()] if self.known_name() else [])
        if known and name not in known:
            raise ModelNotFound(f"unknown model {quoted(name)}; the repository holds "
                                f"{', '.join(map(repr, known))}")

    async def load_again(self, name: str, default_source: str | os.PathLike[str]) -> Model:
        """Load ``name`` again from its source (the version its alias or folder points at now)."""
        manager = self._manager
        slot = manager.slots.get(name, manager.default)
        source = slot.uri or str(default_source)
        serving = slot.model
        keeps = f"; version {serving.version!r} is still served" if serving else ""
        loop = asyncio.get_running_loop()
        try:
            if slot is manager.default:
                model = await loop.run_in_executor(manager.loader, manager.load, source)
            else:
                model = await loop.run_in_executor(manager.loader, slot.load)
        except TabserveError as exc:
            raise BundleError(f"loading model {name!r} from {source} failed: {exc.message}{keeps}") from exc
        except Exception as exc:  # the slot keeps the old model on any failure; say what happened
            raise BundleError(f"loading model {name!r} from {source} failed: {exc}{keeps}") from exc
        if model.name != name:
            raise ModelNotFound(f"{source} holds model {model.name!r}, not {name!r}; {model.name!r} is now served")
        return model

    async def unload(self, name: str) -> tuple[str, str]:
        """Stop serving ``name`` (404 unknown); returns the (name, version) unloaded."""
        manager = self._manager
        slot = manager.slots.get(name)
        if slot is None or slot.model is None:
            known = manager.names
            held = f"; the repository holds {', '.join(map(repr, known))}" if known else "; no model was loaded yet"
            if slot is None or not known:
                raise ModelNotFound(f"unknown model {quoted(name)}{held}")
        await manager.unload_async(name)
        unloaded = slot.unloaded if slot is not None else None
        return (unloaded.name, unloaded.version) if unloaded else (name, "")

    async def start(self, source: str | None, policies: dict[str, TrafficPolicy], poll_interval_s: float,
                    on_refused: Callable[[str, TabserveError], None]) -> None:
        """Start-up, in the background: the first loads, the configured traffic policies, then polling."""
        manager = self._manager
        await manager.load_in_background(source if manager.model is None else None)
        for name, policy in policies.items():
            try:
                await self.set_traffic(name, policy)
            except TabserveError as exc:  # e.g. a policy for a model that is not served: say so, keep serving
                on_refused(name, exc)
        if poll_interval_s > 0:
            await manager.poll(poll_interval_s)

    def close(self) -> None:
        self._manager.close()


__all__ = ["PRIMARY", "ServedModels"]
