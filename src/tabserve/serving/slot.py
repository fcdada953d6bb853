"""One model URI served under one name: its current version, how it is loaded and swapped, why a load failed,
when a failed version is tried again, and the cached version served while the registry is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from tabserve.core.model import Model
from tabserve.core.runtime import RuntimeOptions
from tabserve.errors import ModelNotReady, RegistryUnavailable
from tabserve.observability.logging import get_logger
from tabserve.registry import Fingerprint, ModelSource, ResolvedVersion
from tabserve.serving.loading import load_and_warm

State = Literal["empty", "loading", "ready", "failed", "unloaded"]
# A version that failed is tried again by polling as soon as its files change (a copy finished), else after a
# wait that doubles with each failure: a registry's blip heals, a broken version is not reloaded every poll.
RETRY_FIRST_S = 30.0
RETRY_MAX_S = 900.0


@dataclass(frozen=True, slots=True)
class LoadFailure:
    source: str
    message: str
    at: float
    version: str | None = None
    fingerprint: Fingerprint | None = None  # the source's files when it failed (local sources)
    attempts: int = 1  # failures in a row of this version (or of resolving, version None)
    unavailable: bool = False  # the registry could not be reached: a retry may well succeed

    @property
    def retry_at(self) -> float:
        """When polling tries this version again though its files did not change."""
        return self.at + min(RETRY_FIRST_S * 2 ** (self.attempts - 1), RETRY_MAX_S)


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
        self.fallback: str | None = None  # why the version served is the cached one, not the registry's answer
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
             resolved: ResolvedVersion | None = None, fingerprint: Fingerprint | None = None) -> Model:
        """Resolve, fetch, verify, load and warm a version (or take ``preloaded``), then swap it in. On any
        failure the old version stays and the error is raised. When the registry cannot be reached, the version
        this URI served last is loaded from its verified local copy, if one is kept."""
        with self._lock:
            self.loading = True
            if source is not None:
                self.source = source
            assert self.source is not None, "a slot without a source cannot load"
            where = self.source.uri
            try:
                if fingerprint is None:
                    fingerprint = self.source.fingerprint()  # before reading: a change while we read shows
                resolved = resolved or self._resolve(allow_cached=True)
                where = f"{self.source.uri} (version {resolved.version})"
                if preloaded is not None:
                    model = preloaded.result()
                else:
                    model = load_and_warm(self.source.fetch(resolved), self.options)
                model.served_name = self.name or model.manifest.name
                model.served_version = resolved.version
            except Exception as exc:  # any failure, expected or not, must leave the old version serving
                self._record_failure(where, exc, resolved.version if resolved else None, fingerprint)
                raise
            finally:
                self.loading = False
            if self.name is None:
                self.name = model.name
            replaced = self._model
            model.served_from_cache = resolved.fallback  # type: ignore[attr-defined] - read by the metrics
            self._on_loaded(model)  # before the swap: its first request finds its metrics ready
            self._model = model
            self.fallback = resolved.fallback
            self.last_failure = None
            self.unloaded = None
        if replaced is not None and replaced is not model:
            self._on_replaced(replaced)
        if resolved.fallback is None:
            self._remember(resolved, model)
        else:
            self.log.warning("serving_cached_version", model=model.name, model_version=model.version,
                             source=self.source.uri, reason=resolved.fallback)
        self.log.info("model_loaded", model=model.name, model_version=model.version, source=self.source.uri,
                      load_ms=round(model.load_seconds * 1000, 2),
                      replaced=replaced.version if replaced is not None else None)
        return model

    def _resolve(self, *, allow_cached: bool) -> ResolvedVersion:
        """The source's answer; with ``allow_cached``, the version served last when the registry is down (not
        when it answers that the alias is gone: then nothing stale is served)."""
        assert self.source is not None
        try:
            return self.source.resolve()
        except RegistryUnavailable as exc:
            cached = self.source.cached(exc.message) if allow_cached else None
            if cached is None:
                raise
            return cached

    def _remember(self, resolved: ResolvedVersion, model: Model) -> None:
        assert self.source is not None
        try:
            self.source.remember(resolved, model.manifest.model.sha256)
        except Exception as exc:  # noqa: BLE001 - the version serves; only a later fallback would miss it
            self.log.warning("cache_record_failed", model=model.name, model_version=model.version,
                             source=self.source.uri, error=str(exc))

    def refresh(self, force: bool = False) -> bool:
        """Load the version the source points at now if it is new (``force``: even one that failed before, and
        only the registry's own answer, never the cached fallback). Returns whether a version was swapped in;
        raises (old version kept) when resolving or loading fails."""
        assert self.source is not None, "a slot without a source cannot refresh"
        fingerprint = self.source.fingerprint()
        try:
            resolved = self._resolve(allow_cached=not force)
        except Exception as exc:
            self._record_failure(self.source.uri, exc, None, fingerprint)
            raise
        if not force and not self.needs_load(resolved, fingerprint):
            return False
        self.load(resolved=resolved, fingerprint=fingerprint)
        return True

    def _record_failure(self, where: str, exc: BaseException, version: str | None,
                        fingerprint: Fingerprint | None = None) -> None:
        previous, message = self.last_failure, str(exc)
        again = previous is not None and previous.version == version
        failure = self.last_failure = LoadFailure(
            where, message, time.time(), version, fingerprint, previous.attempts + 1 if again else 1,
            isinstance(exc, RegistryUnavailable))
        if again and fingerprint is not None and previous.fingerprint == fingerprint and previous.message == message:
            return  # the same failure of the same files (an unreadable manifest, polled): logged once
        self.log.error("model_load_failed", model=self.name, source=where, error=message,
                       serving=self._model.version if self._model else None)
        self._on_failed(self.name or "", failure)

    def needs_load(self, resolved: ResolvedVersion, fingerprint: Fingerprint | None = None) -> bool:
        """Whether polling should load ``resolved``: not when it serves already (the cached fallback gives way
        to the registry's answer, even of the same version); a version whose load failed only once its files
        changed (a copy finished) or its retry time came (``fingerprint``: the source's files now)."""
        model = self._model
        if model is not None and model.version == resolved.version:
            return self.fallback is not None and resolved.fallback is None
        failure = self.last_failure
        if failure is None or failure.version != resolved.version:
            return True
        if fingerprint is not None and failure.fingerprint is not None and fingerprint != failure.fingerprint:
            return True
        return time.time() >= failure.retry_at

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
            if self.fallback is not None:  # the registry could not be asked: this is the version served last
                out.update(stale=True, served_from="cache", stale_reason=self.fallback)
        if failure is not None:
            out["last_failure"] = {"source": failure.source, "version": failure.version, "error": failure.message,
                                   "at": failure.at, "attempts": failure.attempts}
            if failure.version is not None and (model is None or model.version != failure.version):
                out["last_failure"]["retry_at"] = failure.retry_at  # sooner when its files change
        return out

