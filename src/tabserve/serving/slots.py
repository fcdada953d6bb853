"""The slot table: every served name's slot, the default one first, and the internal slots of A/B variants
and shadows (which answer under their model's name). The traffic router and the manager both hold it; neither
holds the other."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tabserve.core.model import Model
from tabserve.core.quoting import quoted
from tabserve.core.runtime import RuntimeOptions
from tabserve.errors import BundleError, ModelNotFound, ModelNotReady
from tabserve.registry import ModelSource, open_source
from tabserve.serving.slot import LoadFailure, ModelSlot


class SlotTable:
    def __init__(self, options: RuntimeOptions, home: Path, registry_timeout_s: float, *,
                 on_loaded: Callable[[Model], None], on_replaced: Callable[[Model], None],
                 on_failed: Callable[[str, LoadFailure], None], on_dropped: Callable[[ModelSlot], None]) -> None:
        self.options = options
        self.home = home
        self.registry_timeout_s = registry_timeout_s
        self._on_loaded = on_loaded
        self._on_replaced = on_replaced
        self._on_failed = on_failed
        self._on_dropped = on_dropped  # releases a dropped slot's version (off the event loop)
        self.slots: dict[str, ModelSlot] = {}
        self.default = self.new_slot(None, None)

    def open(self, uri: str | os.PathLike[str]) -> ModelSource:
        return open_source(uri, home=self.home, timeout_s=self.registry_timeout_s)

    def new_slot(self, name: str | None, source: ModelSource | None, model: Model | None = None) -> ModelSlot:
        return ModelSlot(name, source, self.options, self._on_loaded, self._on_replaced, self._on_failed, model)

    def serve_default(self, model: Model, source: ModelSource) -> None:
        """The default slot serves ``model``, loaded by the caller from ``source``, under its name."""
        self.default = self.new_slot(None, source, model)
        self.slots[model.name] = self.default

    def name_default(self) -> None:
        """Once the default slot knows its name, it answers under it, first (it is the default)."""
        default = self.default
        if default.name is not None and default.name not in self.slots:
            self.slots = {default.name: default, **self.slots}

    def add(self, name: str, uri: str | os.PathLike[str]) -> ModelSlot:
        if name in self.slots:
            raise BundleError(f"model name {name!r} is served twice; give each model its own name")
        slot = self.slots[name] = self.new_slot(name, self.open(uri))
        return slot

    def internal_slot(self, key: str, served_name: str, uri: str) -> ModelSlot:
        """A slot that answers under another model's name (an A/B variant or a shadow), shared by key."""
        slot = self.slots.get(key)
        if slot is None or slot.uri != uri:
            if slot is not None:
                self.drop_slot(key)
            slot = self.slots[key] = self.new_slot(served_name, self.open(uri))
        return slot

    def drop_slot(self, key: str) -> None:
        """Forget an internal slot no policy uses any more; its version is released by ``on_dropped``."""
        slot = self.slots.get(key)
        if slot is None or slot.name == key:  # a served model's own slot is never dropped
            return
        del self.slots[key]
        self._on_dropped(slot)

    def slot(self, name: str) -> ModelSlot:
        slot = self.slots.get(name)
        if slot is None:
            default = self.default
            if default.name is None:  # the default model never loaded: its name is not known, it may be this
                raise ModelNotReady(default.not_ready_reason())
            raise ModelNotFound(f"unknown model {quoted(name)}; this server serves "
                                f"{', '.join(map(repr, self.names))}")
        return slot

    @property
    def names(self) -> list[str]:
        """The served model names (A/B variants and shadows answer under their model's name)."""
        return [k for k, s in self.slots.items() if s.name == k]
