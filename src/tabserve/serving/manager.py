"""The models a server answers with: the slot table (one slot per served URI), pinned versions, polling, the
batchers and the scoring and loader threads, and the traffic router. ``api/`` sees it through
``serving.facade.ServedModels`` only."""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
from tabserve.core.runtime import RuntimeOptions
from tabserve.core.schema import ModelInput
from tabserve.errors import BundleError, ModelNotFound, TabserveError, VersionUnavailable
from tabserve.observability.logging import get_logger
from tabserve.registry import REGISTRY_TIMEOUT_S, LocalSource, is_registry_uri, registered_name, version_uri
from tabserve.serving import preload
from tabserve.serving.batcher import BatchingOptions, MicroBatcher
from tabserve.serving.cpus import usable_cpus
from tabserve.serving.pinned import PinnedVersions
from tabserve.serving.slot import LoadFailure, ModelSlot, State, UnloadedModel
from tabserve.serving.slots import SlotTable
from tabserve.serving.traffic import TrafficRouter
from tabserve.settings import Settings, default_home

# A version is a registry version number or a folder name beside the bundle: never a path.
_VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

__all__ = ["LoadFailure", "ModelManager", "ModelObserver", "State", "UnloadedModel"]


class ModelObserver(Protocol):
    """Told about versions coming and going and about each onnxruntime call (metrics implement it)."""

    def model_loaded(self, model: Model) -> None: ...

    def model_unloaded(self, model: Model) -> None: ...

    def batch_recorder(self, model: Model) -> Callable[[int, float, ModelInput, Prediction], None]: ...


class ModelManager:
    """Every served model. The first slot is the default model (``/api/v1/predict``); ``current()`` is its hot
    path. More models, A/B variants and shadows are more slots; ``/versions/{v}`` requests load pinned versions
    on demand (least recently used beyond ``max_pinned``)."""

    def __init__(self, options: RuntimeOptions | None = None, *, model: Model | None = None,
                 executor_threads: int | None = None, batching: BatchingOptions | None = None,
                 observer: ModelObserver | None = None, home: Path | None = None, max_pinned: int = 4,
                 shadow_queue_size: int = 1000, registry_timeout_s: float = REGISTRY_TIMEOUT_S) -> None:
        self.options = options or RuntimeOptions()
        self.batching = batching or BatchingOptions()
        self.observer = observer
        self.log = get_logger("tabserve.models")
        self._batchers: weakref.WeakKeyDictionary[Model, MicroBatcher] = weakref.WeakKeyDictionary()
        self.table = SlotTable(self.options, home or default_home(), registry_timeout_s, on_loaded=self._loaded,
                               on_replaced=self._released, on_failed=self._failed, on_dropped=self._drop)
        if model is not None:
            model.warm_up()
            self.table.serve_default(model, LocalSource(model.bundle.path))
            self._notify("model_loaded", model)
        self.pins = PinnedVersions(max_pinned, on_evicted=self._released)
        # Set when the process was asked to stop: readiness answers 503 while in-flight requests finish.
        self.draining = False
        # Large batches are scored here so the event loop keeps answering small requests.
        # One scoring thread per CPU this process may run on: more would make two large batches share a core
        # and evict each other's trees from the cache (measured: binary 1000-row batches 82.6k rows/s with 2
        # threads on one pinned core).
        threads = executor_threads or usable_cpus()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tabserve-infer")
        # Loads (downloads, hashing, session building) never take a scoring thread.
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tabserve-load")
        # The router holds the slot table and the batchers' lookup, not the manager.
        self.traffic = TrafficRouter(self.table, self.batcher, shadow_queue_size, observer)

    @classmethod
    def from_settings(cls, settings: Settings, model: Model | None = None,
                      observer: ModelObserver | None = None) -> ModelManager:
        batching = BatchingOptions(max_batch_size=settings.max_batch_size,
                                   max_queue_delay_us=settings.max_queue_delay_us,
                                   max_queue_size=settings.max_queue_size, inline_max_rows=settings.inline_max_rows)
        options = RuntimeOptions.from_settings(settings)
        return cls(options, model=model, batching=batching, observer=observer, home=settings.home,
                   max_pinned=settings.max_pinned_versions, shadow_queue_size=settings.shadow_queue_size,
                   registry_timeout_s=settings.registry_timeout_s)

    # -- slots (the table holds them) ----------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, ModelSlot]:
        return self.table.slots

    @property
    def default(self) -> ModelSlot:
        return self.table.default

    @property
    def names(self) -> list[str]:
        """The served model names (A/B variants and shadows answer under their model's name)."""
        return self.table.names

    def add(self, name: str, uri: str | os.PathLike[str]) -> ModelSlot:
        """Serve ``uri`` under ``name`` too (not loaded yet: ``load_all`` or ``refresh`` does it)."""
        return self.table.add(name, uri)

    def slot(self, name: str) -> ModelSlot:
        return self.table.slot(name)

    def _drop(self, slot: ModelSlot) -> None:
        """A dropped internal slot's version is released on the loader thread, after a load of that slot in
        progress (which holds the slot's lock)."""
        self.loader.submit(self._release_slot, slot)

    def _release_slot(self, slot: ModelSlot) -> None:
        model = slot.unload()
        if model is not None:
            self._released(model)

    # -- the default model (the original /api/v1 routes, readiness) --------------------------------------------

    @property
    def model(self) -> Model | None:
        return self.default.model

    def current(self) -> Model:
        return self.default.current()

    @property
    def state(self) -> State:
        return self.default.state

    @property
    def last_failure(self) -> LoadFailure | None:
        return self.default.last_failure

    @property
    def unloaded(self) -> UnloadedModel | None:
        return self.default.unloaded

    @property
    def source(self) -> str | None:
        """The default model's URI: what the v2 repository extension loads again."""
        return self.default.uri

    @property
    def ready(self) -> bool:
        """Every served model (not A/B variants or shadows, which fall back to their primary) has a version, and
        the default one answers under its name (the first load names it a moment after its model is set)."""
        default = self.default
        return (default.model is not None and self.slots.get(default.name or "") is default
                and all(self.slots[n].model is not None for n in self.names))

    def load(self, source: str | os.PathLike[str] | None = None, preloaded: Future[Model] | None = None) -> Model:
        """Load (or reload) the default model from ``source`` (default: its URI). The old version stays on
        failure."""
        slot = self.default
        src = self.table.open(source) if source is not None else None
        if slot.name is None and source is not None and is_registry_uri(source):
            slot.name = registered_name(str(source))  # served under its registered name, whatever the bundle says
        model = slot.load(src, preloaded)
        self.table.name_default()
        return model

    async def unload_async(self, name: str | None = None) -> Model | None:
        """``unload`` on the loader thread: after a load in progress (which holds the slot), never blocking the
        event loop while it waits."""
        return await asyncio.get_running_loop().run_in_executor(self.loader, self.unload, name)

    def unload(self, name: str | None = None) -> Model | None:
        """Stop serving ``name`` (default: the default model): its requests get 503 until the next load."""
        model = (self.default if name is None else self.slot(name)).unload()
        if model is not None:
            self._released(model)
            self.log.info("model_unloaded", model=model.name, model_version=model.version)
        return model

    # -- versions and batchers -----------------------------------------------------------------------------

    def batcher(self, model: Model) -> MicroBatcher:
        """The micro-batcher of one model version: requests in flight on an old version finish on it."""
        batcher = self._batchers.get(model)
        if batcher is None:
            on_batch = self.observer.batch_recorder(model) if self.observer is not None else None
            batcher = self._batchers[model] = MicroBatcher(model, self.executor, self.batching, on_batch)
        return batcher

    def find_version(self, name: str, version: str) -> Model | None:
        """A loaded version of ``name`` (served by any slot, or pinned), without loading anything. Safe from
        any thread: it only reads."""
        for slot in list(self.slots.values()):
            model = slot.model
            if slot.name == name and model is not None and model.version == version:
                return model
        return self.pins.get(name, version)

    async def version(self, name: str, version: str) -> Model:
        """Version ``version`` of ``name``: the served one, a pinned one, or loaded now (concurrent requests for
        the same version wait for one load; the pins are touched on the event loop only: serving/pinned.py)."""
        model = self.find_version(name, version)
        if model is not None:
            self.pins.touch(name, version)
            return model
        slot = self.slot(name)
        if slot.uri is None or not _VERSION.fullmatch(version) or set(version) == {"."}:
            raise ModelNotFound(f"model {name!r} has no version {quoted(version)}; "
                                f"{self._served_versions(name)}")
        return await self.pins.load((name, version), lambda: self._load_pinned(slot, version), self.loader)

    def _load_pinned(self, slot: ModelSlot, version: str) -> Model:
        """Runs on the loader thread: builds the version and returns it; ``_pin`` keeps it, on the loop."""
        assert slot.name is not None and slot.uri is not None
        uri = version_uri(slot.uri, version)
        try:
            pinned = ModelSlot(slot.name, self.table.open(uri), self.options, self._loaded,
                               self._released, lambda name, failure: None)
            return pinned.load()
        except ModelNotFound as exc:  # the source's message may name the registry: keep that for the log
            self.log.info("pinned_version_not_found", model=slot.name, version=version, error=exc.message)
            raise ModelNotFound(f"model {slot.name!r} has no version {version!r}; "
                                f"{self._served_versions(slot.name)}") from exc
        except BundleError as exc:
            if not exc.context.get("path") or Path(str(exc.context["path"])).exists():
                raise self._unavailable(slot.name, version, exc.message) from exc
            raise ModelNotFound(f"model {slot.name!r} has no version {version!r}; "
                                f"{self._served_versions(slot.name)}") from exc
        except TabserveError:
            raise
        except Exception as exc:  # the version exists but the server cannot load it: 503, logged
            raise self._unavailable(slot.name, version, str(exc)) from exc

    def _unavailable(self, name: str, version: str, why: str) -> VersionUnavailable:
        """A pinned version that exists and fails to load is the server's problem, not the request's (503)."""
        self.log.error("pinned_version_load_failed", model=name, version=version, error=why)
        return VersionUnavailable(f"version {version!r} of model {name!r} cannot be loaded: {why}; "
                                  f"{self._served_versions(name)}")

    def _served_versions(self, name: str) -> str:
        versions = sorted({m.version for s in self.slots.values() if s.name == name and (m := s.model) is not None})
        if len(versions) == 1:
            return f"the served version is {versions[0]!r}"
        return f"the served versions are {', '.join(map(repr, versions))}" if versions else "none is served"

    @property
    def pinned(self) -> list[Model]:
        return self.pins.models()

    # -- loading, polling ----------------------------------------------------------------------------------

    def refresh(self, name: str | None = None, *, force: bool = False) -> list[tuple[str, str, str | None]]:
        """Ask each slot's source (or ``name``'s) which version it points at now and load it when it changed.
        ``force`` loads again even a version whose load failed. Returns (slot, outcome, error) per slot."""
        results = []
        slots = list(self.slots.items())
        default = self.default
        if default.source is not None and all(s is not default for _, s in slots):
            slots.insert(0, (default.name or str(default.uri), default))  # its first load failed: keep trying
        for key, slot in slots:
            if slot.source is None or (name is not None and slot.name != name):
                continue
            try:
                results.append((key, "loaded" if slot.refresh(force) else "unchanged", None))
            except Exception as exc:  # noqa: BLE001 - recorded and logged by the slot; the others still refresh
                results.append((key, "failed", str(exc)))
        self.table.name_default()
        return results

    async def refresh_async(self, name: str | None = None, *, force: bool = False) -> list[tuple[str, str, str | None]]:
        return await asyncio.get_running_loop().run_in_executor(self.loader, lambda: self.refresh(name, force=force))

    async def poll(self, interval_s: float) -> None:
        """Every ``interval_s``, notice moved aliases and new versions and swap them in (until cancelled)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh_async()
            except Exception as exc:  # noqa: BLE001 - polling must outlive any one failure
                self.log.error("model_poll_failed", error=repr(exc))

    async def load_in_background(self, source: str | os.PathLike[str] | None = None) -> None:
        """The first load of every slot at start-up (the default one from ``source`` when given)."""
        if source is not None:
            await self.load_slot(self.default, lambda: self.load(source, preload.take(source)))
        for slot in list(self.slots.values()):
            if slot.model is None and slot.source is not None and slot is not self.default:
                await self.load_slot(slot)

    async def load_slot(self, slot: ModelSlot, load: Callable[[], Model] | None = None) -> None:
        """Load ``slot`` (or run ``load``) on the loader thread, its state ``loading`` meanwhile. A failure is
        recorded by the slot, logged and shown at the models endpoint; it is not raised."""
        slot.loading = True
        try:
            await asyncio.get_running_loop().run_in_executor(self.loader, load or slot.load)
        except Exception:  # noqa: BLE001, S110 - recorded in last_failure and logged; readiness reports it
            pass
        finally:
            slot.loading = False

    # -- observer ------------------------------------------------------------------------------------------

    def _loaded(self, model: Model) -> None:
        note = {"note": model.runtime.placement_note} if model.runtime.placement_note else {}
        self.log.info("execution_provider", model=model.name, model_version=model.version,
                      provider=model.runtime.providers[0], requested=list(self.options.providers), **note)
        self._notify("model_loaded", model)
        # Queued behind the load that called this, so it runs once the version serves: not on the cold start.
        self.loader.submit(model.runtime.build_batch_session)

    def _released(self, model: Model) -> None:
        """Metrics stop counting a version once no slot and no pin serves it any more."""
        if self.find_version(model.name, model.version) is None:
            self._notify("model_unloaded", model)

    def _failed(self, name: str, failure: LoadFailure) -> None:
        hook = getattr(self.observer, "model_load_failed", None)
        if hook is not None:
            try:
                hook(name)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop a model from serving
                self.log.error("model_observer_failed", event="model_load_failed", error=repr(exc))

    def _notify(self, event: Literal["model_loaded", "model_unloaded"], model: Model) -> None:
        if self.observer is None:
            return
        try:
            getattr(self.observer, event)(model)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop a model from serving
            self.log.error("model_observer_failed", event=event, model=model.name, model_version=model.version,
                           error=repr(exc))

    def close(self) -> None:
        self.traffic.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loader.shutdown(wait=False, cancel_futures=True)

