"""One model URI served under one name: its current version, how it is loaded and swapped, why a load failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model
from tabserve.core.runtime import RuntimeOptions
from tabserve.errors import ModelNotReady
from tabserve.observability.logging import get_logger
from tabserve.registry import ModelSource, ResolvedVersion

State = Literal["empty", "loading", "ready", "failed", "unloaded"]


@dataclass(frozen=True, slots=True)
class LoadFailure:
    source: str
    message: str
    at: float
    version: str | None = None


@dataclass(frozen=True, slots=True)
class UnloadedModel:
    name: str
    version: str
    at: float


class ModelSlot:
    """``current()`` is the hot path: one attribute read. ``load``/``refresh`` build a new version off the request
    path and swap it in with one assignment; requests holding the old ``Model`` finish on it. Any failure keeps
    the old version serving and is kept in ``last_failure`` (and logged, and counted by the observer)."""

    def __init__(self, name: str | None, source: ModelSource | None, options: RuntimeOptions,
                 on_loaded: Callable[[Model], None], on_replaced: Callable[[Model], None],
                 on_failed: Callable[[str, LoadFailure], None], model: Model | None = None) -> None:
        self.name = name  # None: take the bundle's own name at the first load
        self.source = source
        self.options = options
        self._on_loaded = on_loaded
        self._on_replaced = on_replaced
        self._on_failed = on_failed
        self._model = model
        self.loading = False
        self.last_failure: LoadFailure | None = None
        self.unloaded: UnloadedModel | None = None
        self._lock = threading.Lock()
        self.log = get_logger("tabserve.models")
        if model is not None and self.name is None:
            self.name = model.name

    @property
    def uri(self) -> str | None:
        return self.source.uri if self.source is not None else None

    @property
    def model(self) -> Model | None:
        return self._model

    @property
    def state(self) -> State:
        if self._model is not None:
            return "ready"
        if self.loading:
            return "loading"
        if self.unloaded is not None:
            return "unloaded"
        return "failed" if self.last_failure else "empty"

    def current(self) -> Model:
        model = self._model
        if model is None:
            raise ModelNotReady(self.not_ready_reason())
        return model

    def not_ready_reason(self) -> str:
        which = f"model {self.name!r}" if self.name else "the model"
        if self.loading:
            return f"{which} is still loading; retry in a moment"
        if self.unloaded is not None:
            return f"model {self.unloaded.name!r} was unloaded; load it again to serve it"
        reason = f": the last load failed ({self.last_failure.message})" if self.last_failure else ""
        return f"no model is loaded for {which}{reason}" if self.name else f"no model is loaded{reason}"

    def load(self, source: ModelSource | None = None, preloaded: Future[Model] | None = None,
             resolved: ResolvedVersion | None = None) -> Model:
        """Resolve, fetch, verify, load and warm a version (or take ``preloaded``), then swap it in. On any
        failure the old version stays and the error is raised."""
        with self._lock:
            self.loading = True
            if source is not None:
                self.source = source
            assert self.source is not None, "a slot without a source cannot load"
            where = self.source.uri
            try:
                resolved = resolved or self.source.resolve()
                where = f"{self.source.uri} (version {resolved.version})"
                if preloaded is not None:
                    model = preloaded.result()
                else:
                    t0 = time.perf_counter()
                    model = Model.from_bundle(read_bundle(self.source.fetch(resolved)), self.options)
                    model.warm_up()
                    model.load_seconds = time.perf_counter() - t0
                model.served_name = self.name or model.manifest.name
                model.served_version = resolved.version
            except Exception as exc:  # any failure, expected or not, must leave the old version serving
                self._record_failure(where, exc, resolved.version if resolved else None)
                raise
            finally:
                self.loading = False
            if self.name is None:
                self.name = model.name
            replaced = self._model
            self._on_loaded(model)  # before the swap: its first request finds its metrics ready
            self._model = model
            self.last_failure = None
            self.unloaded = None
        if replaced is not None and replaced is not model:
            self._on_replaced(replaced)
        self.log.info("model_loaded", model=model.name, model_version=model.version, source=self.source.uri,
                      load_ms=round(model.load_seconds * 1000, 2),
                      replaced=replaced.version if replaced is not None else None)
        return model

    def refresh(self, force: bool = False) -> bool:
        """Load the version the source points at now if it is new (``force``: even one that failed before).
        Returns whether a version was swapped in; raises (old version kept) when resolving or loading fails."""
        assert self.source is not None, "a slot without a source cannot refresh"
        try:
            resolved = self.source.resolve()
        except Exception as exc:
            self._record_failure(self.source.uri, exc, None)
            raise
        if not force and not self.needs_load(resolved):
            return False
        self.load(resolved=resolved)
        return True

    def _record_failure(self, where: str, exc: BaseException, version: str | None) -> None:
        failure = self.last_failure = LoadFailure(where, str(exc), time.time(), version)
        self.log.error("model_load_failed", model=self.name, source=where, error=str(exc),
                       serving=self._model.version if self._model else None)
        self._on_failed(self.name or "", failure)

    def needs_load(self, resolved: ResolvedVersion) -> bool:
        """True when ``resolved`` is neither served nor the version whose load just failed (polling does not
        retry a broken version every interval; an admin reload does)."""
        model = self._model
        if model is not None and model.version == resolved.version:
            return False
        failure = self.last_failure
        return not (failure is not None and failure.version == resolved.version)

    def unload(self) -> Model | None:
        with self._lock:
            model = self._model
            if model is not None:
                self._model = None
                self.unloaded = UnloadedModel(model.name, model.version, time.time())
        return model

    def describe(self) -> dict:
        """What the models endpoints show about this slot besides the manifest."""
        model, failure = self._model, self.last_failure
        out: dict = {"state": self.state, "uri": self.uri}
        if model is not None:
            out.update(version=model.version, load_ms=round(model.load_seconds * 1000, 3),
                       path=str(model.bundle.path))
        if failure is not None:
            out["last_failure"] = {"source": failure.source, "version": failure.version, "error": failure.message,
                                   "at": failure.at}
        return out

