"""Start loading the model while the server is still importing its web stack (cold start).

``tabserve serve`` with one worker calls ``start`` before uvicorn imports the app: reading, hashing and
building the onnxruntime session run in a thread, mostly in C without the GIL, overlapping ~0.5 s of Python
imports. The app's start-up then ``take``s the result instead of loading again (docs/benchmarks.md has the
cold-start numbers with and without).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path

from tabserve.core.bundle import resolve_bundle_dir
from tabserve.core.model import Model
from tabserve.core.runtime import RuntimeOptions
from tabserve.errors import BundleError
from tabserve.serving.loading import load_and_warm

_pending: dict[str, Future[Model]] = {}
_lock = threading.Lock()


def _key(path: str | os.PathLike[str]) -> str:
    """The bundle folder a path means (a model folder means its newest version), so either finds the other."""
    try:
        return str(resolve_bundle_dir(path).resolve())
    except BundleError:
        return str(Path(path).expanduser().resolve())


def start(path: str | os.PathLike[str], options: RuntimeOptions) -> None:
    future: Future[Model] = Future()

    def build() -> None:
        try:
            model = load_and_warm(path, options)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes it, which reports it as a failed load
            future.set_exception(exc)
        else:
            future.set_result(model)

    with _lock:
        _pending[_key(path)] = future
    threading.Thread(target=build, name="tabserve-preload", daemon=True).start()


def take(path: str | os.PathLike[str]) -> Future[Model] | None:
    """The preloaded model for ``path``, once (the CLI started it with the server's own settings)."""
    with _lock:
        return _pending.pop(_key(path), None)
