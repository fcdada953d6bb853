"""Explicit versions (``/versions/{v}`` requests) loaded on demand beside the served ones, the least recently
used released beyond a limit.

The LRU and the loads in progress are touched on the event loop only, so no lock exists that a loader thread
could hold while a request waits for it: a pinned load blocked by a lock on the loop would stall every client,
probes included (the deadlock tests/lifecycle/test_pinned_eviction.py guards against).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor

from tabserve.core.model import Model

Key = tuple[str, str]  # (model name, version)


class PinnedVersions:
    def __init__(self, limit: int, on_evicted: Callable[[Model], None]) -> None:
        self.limit = limit
        self._on_evicted = on_evicted
        self._lru: OrderedDict[Key, Model] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[Model]] = {}

    def get(self, name: str, version: str) -> Model | None:
        """A pinned version, without loading it. Safe from any thread: it only reads."""
        return self._lru.get((name, version))

    def touch(self, name: str, version: str) -> None:
        """Mark a version as just used (on the event loop)."""
        if (name, version) in self._lru:
            self._lru.move_to_end((name, version))

    async def load(self, key: Key, build: Callable[[], Model], loader: Executor) -> Model:
        """``build`` the version on ``loader`` and keep it; concurrent requests for one version wait for one
        load. One waiter cancelled (its client went away) does not cancel the load the others wait for."""
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(self._load(key, build, loader))
        return await asyncio.shield(task)

    async def _load(self, key: Key, build: Callable[[], Model], loader: Executor) -> Model:
        try:
            model = await asyncio.get_running_loop().run_in_executor(loader, build)
        finally:
            del self._loading[key]
        kept = (key[0], model.version)
        self._lru[kept] = model
        self._lru.move_to_end(kept)
        while len(self._lru) > self.limit:
            _, evicted = self._lru.popitem(last=False)
            self._on_evicted(evicted)
        return model

    def models(self) -> list[Model]:
        return list(self._lru.copy().values())  # copy(): one C call, consistent even off the loop
