"""Holds the serving model: loads and warms a version off the request path, keeps the old one on failure."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, Protocol

from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model, Prediction
from tabserve.core.runtime import RuntimeOptions
from tabserve.core.schema import ModelInput
from tabserve.errors import ModelNotReady
from tabserve.observability.logging import get_logger
from tabserve.serving import preload
from tabserve.serving.batcher import BatchingOptions, MicroBatcher
from tabserve.settings import Settings

State = Literal["empty", "loading", "ready", "failed", "unloaded"]


class ModelObserver(Protocol):
    """Told about versions coming and going and about each onnxruntime call (metrics implement it)."""

    def model_loaded(self, model: Model) -> None: ...

    def model_unloaded(self, model: Model) -> None: ...

    def batch_recorder(self, model: Model) -> Callable[[int, float, ModelInput, Prediction], None]: ...


@dataclass(frozen=True, slots=True)
class LoadFailure:
    source: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class UnloadedModel:
    name: str
    version: str
    at: float


class ModelManager:
    """The model a server answers with. ``current()`` is the hot path: one attribute read."""

    def __init__(self, options: RuntimeOptions | None = None, *, model: Model | None = None,
                 executor_threads: int | None = None, batching: BatchingOptions | None = None,
                 observer: ModelObserver | None = None) -> None:
        self.options = options or RuntimeOptions()
        self.batching = batching or BatchingOptions()
        self.observer = observer
        self._batchers: weakref.WeakKeyDictionary[Model, MicroBatcher] = weakref.WeakKeyDictionary()
        if model is not None:
            model.warm_up()
        self._model = model
        self._loading = False
        self.last_failure: LoadFailure | None = None
        # The bundle path of the last load tried (the served model's, unless that load failed): what the v2
        # repository extension loads again.
        self.source: str | None = str(model.bundle.path) if model is not None else None
        self.unloaded: UnloadedModel | None = None
        # Set when the process was asked to stop: readiness answers 503 while in-flight requests finish.
        self.draining = False
        self._lock = threading.Lock()
        # Large batches are scored here so the event loop keeps answering small requests.
        # One scoring thread per CPU this process may run on: more would make two large batches share a core
        # and evict each other's trees from the cache (measured: binary 1000-row batches 82.6k rows/s with 2
        # threads on one pinned core).
        threads = executor_threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else (os.cpu_count() or 1))
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tabserve-infer")
        self.log = get_logger("tabserve.models")
        if model is not None:
            self._notify("model_loaded", model)

    @classmethod
    def from_settings(cls, settings: Settings, model: Model | None = None,
                      observer: ModelObserver | None = None) -> ModelManager:
        batching = BatchingOptions(max_batch_size=settings.max_batch_size,
                                   max_queue_delay_us=settings.max_queue_delay_us,
                                   max_queue_size=settings.max_queue_size, inline_max_rows=settings.inline_max_rows)
        return cls(RuntimeOptions(intra_op_threads=settings.intra_op_threads), model=model, batching=batching,
                   observer=observer)

    def batcher(self, model: Model) -> MicroBatcher:
        """The micro-batcher of one model version: requests in flight on an old version finish on it."""
        batcher = self._batchers.get(model)
        if batcher is None:
            on_batch = self.observer.batch_recorder(model) if self.observer is not None else None
            batcher = self._batchers[model] = MicroBatcher(model, self.executor, self.batching, on_batch)
        return batcher

    @property
    def state(self) -> State:
        if self._model is not None:
            return "ready"
        if self._loading:
            return "loading"
        if self.unloaded is not None:
            return "unloaded"
        return "failed" if self.last_failure else "empty"

    @property
    def model(self) -> Model | None:
        return self._model

    def current(self) -> Model:
        model = self._model
        if model is None:
            if self._loading:
                raise ModelNotReady("the model is still loading; retry in a moment")
            if self.unloaded is not None:
                raise ModelNotReady(f"model {self.unloaded.name!r} was unloaded; load it again to serve it")
            reason = f": the last load failed ({self.last_failure.message})" if self.last_failure else ""
            raise ModelNotReady(f"no model is loaded{reason}")
        return model

    def load(self, source: str | os.PathLike[str], preloaded: Future[Model] | None = None) -> Model:
        """Read, verify, load and warm a bundle (or take ``preloaded``, built from it already), then swap it in.
        On any failure the old model stays."""
        with self._lock:
            self._loading = True
            self.source = str(source)
            try:
                if preloaded is not None:
                    model = preloaded.result()
                else:
                    t0 = time.perf_counter()
                    model = Model.from_bundle(read_bundle(source), self.options)
                    model.warm_up()
                    model.load_seconds = time.perf_counter() - t0
            except Exception as exc:  # any failure, expected or not, must leave the old model serving
                self.last_failure = LoadFailure(str(source), str(exc), time.time())
                self.log.error("model_load_failed", source=str(source), error=str(exc),
                               serving=self._model.version if self._model else None)
                raise
            finally:
                self._loading = False
            self._notify("model_loaded", model)  # before the swap: its first request finds its metrics ready
            replaced, self._model = self._model, model
            self.last_failure = None
            self.unloaded = None
        if replaced is not None and (replaced.name, replaced.version) != (model.name, model.version):
            self._notify("model_unloaded", replaced)
        self.log.info("model_loaded", source=str(source), model=model.name, model_version=model.version,
                      load_ms=round(model.load_seconds * 1000, 2))
        return model

    def unload(self) -> Model | None:
        """Stop serving: requests get ``ModelNotReady`` until the next ``load``. Returns the model unloaded."""
        with self._lock:
            model = self._model
            if model is not None:
                self._model = None
                self.unloaded = UnloadedModel(model.name, model.version, time.time())
        if model is not None:
            self._notify("model_unloaded", model)
            self.log.info("model_unloaded", model=model.name, model_version=model.version)
        return model

    def _notify(self, event: Literal["model_loaded", "model_unloaded"], model: Model) -> None:
        if self.observer is None:
            return
        try:
            getattr(self.observer, event)(model)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop a model from serving
            self.log.error("model_observer_failed", event=event, model=model.name, model_version=model.version,
                           error=repr(exc))

    async def load_in_background(self, source: str | os.PathLike[str]) -> None:
        self._loading = True
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.load, source,
                                                             preload.take(source))
        except Exception:
            pass  # recorded in last_failure and logged; readiness reports it
        finally:
            self._loading = False

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
