"""Which version answers a request: weighted A/B variants (sticky by a request key) and shadow copies.

A policy names variants by label: a version number or an alias of the served model's registry URI
(``champion``, ``challenger``, ``7``), or a full URI/path. Each variant is a slot of its own, polled and
swapped like any other. A variant without a ready version falls back to the primary, so a broken challenger
never fails a request. Shadow copies are scored after the primary answer is computed, from a bounded queue:
when it is full the copy is dropped and counted, never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
from tabserve.core.schema import ModelInput
from tabserve.errors import ConfigError
from tabserve.observability.logging import get_logger
from tabserve.registry import variant_uri

if TYPE_CHECKING:
    from tabserve.serving.batcher import MicroBatcher
    from tabserve.serving.slot import ModelSlot
    from tabserve.serving.slots import SlotTable

PRIMARY = "primary"
DEFAULT_STICKY_HEADER = "x-tabserve-key"


class TrafficPolicy(BaseModel):
    """How one served model's requests are split; the body of ``PUT /api/v1/admin/traffic/{model}``."""

    model_config = ConfigDict(extra="forbid")

    variants: dict[str, float] = Field(
        default_factory=dict, description="label -> weight (relative). A label is a version number, an alias of "
        "the model's registry URI, or a URI/path; 'primary' is the model as served. The primary gets whatever "
        "weight is not given when the weights add up to less than 100.")
    shadow: str | None = Field(None, description="label of a version that also scores every request in the "
                               "background; its divergence from the answer is recorded")
    sticky_header: str = Field(DEFAULT_STICKY_HEADER, description="request header whose value picks the variant "
                               "(the same key always gets the same variant); without it the pick is random")

    @field_validator("variants")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for label, weight in value.items():
            if not weight >= 0:
                raise ValueError(f"variant {quoted(label)} has weight {weight}; weights are numbers >= 0")
        if value and sum(value.values()) <= 0:
            raise ValueError("the variants' weights add up to 0; give at least one a positive weight")
        return value

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, value: str) -> str:
        return value.strip().lower()

    @classmethod
    def parse(cls, raw: Any, name: str) -> TrafficPolicy:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "policy"
            raise ConfigError(f"traffic policy for model {name!r}: {where}: {first['msg']}") from exc


@dataclass(slots=True)
class _Route:
    policy: TrafficPolicy
    labels: list[str]
    slots: list[ModelSlot]
    cumulative: list[float]
    shadow: ModelSlot | None
    header: bytes


@dataclass(slots=True)
class ShadowStats:
    """Divergence between the answers and a shadow's, since the policy was set."""

    compared_rows: int = 0
    compared_requests: int = 0
    dropped: int = 0
    errors: int = 0
    max_abs_diff: float = 0.0
    sum_abs_diff: float = 0.0
    label_disagreements: int = 0
    versions: set[tuple[str, str]] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        rows = self.compared_rows
        return {"compared_rows": rows, "compared_requests": self.compared_requests, "dropped": self.dropped,
                "errors": self.errors, "mean_abs_diff": self.sum_abs_diff / rows if rows else None,
                "max_abs_diff": self.max_abs_diff if rows else None,
                "label_disagreement_rate": self.label_disagreements / rows if rows else None,
                "compared_versions": [{"primary": p, "shadow": s} for p, s in sorted(self.versions)]}


class TrafficRouter:
    """``table``: the served slots (variants and shadows are slots of it); ``batcher``: a version's batcher,
    which shadow copies are scored through. The router knows nothing else of the manager."""

    def __init__(self, table: SlotTable, batcher: Callable[[Model], MicroBatcher], shadow_queue_size: int = 1000,
                 observer: Any = None) -> None:
        self.table = table
        self._batcher = batcher
        self._routes: dict[str, _Route] = {}
        self.routes = self._routes  # truthy when any model has a policy (the hot path checks this)
        self.stats: dict[str, ShadowStats] = {}
        self._queue: asyncio.Queue[tuple[str, Model, Model, ModelInput, Prediction]] | None = None
        self._queue_size = shadow_queue_size
        self._worker: asyncio.Task[None] | None = None
        self.observer = observer  # metrics: shadow_compared(...) / shadow_dropped(...)
        self.log = get_logger("tabserve.traffic")

    # -- configuration -------------------------------------------------------------------------------------

    def set_policy(self, name: str, policy: TrafficPolicy | None) -> list[ModelSlot]:
        """Route ``name`` by ``policy`` (None: back to the primary alone). Returns the slots that still need a
        first load (the caller loads them off the event loop)."""
        primary = self.table.slot(name)
        if policy is None or (not policy.variants and policy.shadow is None):
            self._routes.pop(name, None)
            self.stats.pop(name, None)
            self._drop_unused(name)
            return []
        if primary.uri is None:
            raise ConfigError(f"model {name!r} has no source URI, so it has no variants to route to")
        labels, slots, weights = [], [], []
        variants = dict(policy.variants)
        if variants and PRIMARY not in variants and sum(variants.values()) < 100:
            variants[PRIMARY] = 100 - sum(variants.values())
        try:
            for label, weight in variants.items():
                labels.append(label)
                slots.append(self._variant(name, primary, label))
                weights.append(weight)
            shadow = self._variant(name, primary, policy.shadow) if policy.shadow else None
        except Exception:
            self._drop_unused(name)  # the slots made for a refused policy; the old policy keeps its own
            raise
        if not slots:
            labels, slots, weights = [PRIMARY], [primary], [1.0]
        total = sum(weights)
        cumulative = [w / total for w in accumulate(weights)]
        self._routes[name] = _Route(policy, labels, slots, cumulative, shadow, policy.sticky_header.encode())
        self.stats[name] = ShadowStats()
        self._drop_unused(name)
        self.log.info("traffic_policy_set", model=name, variants=dict(zip(labels, weights, strict=True)),
                      shadow=policy.shadow)
        return [s for s in (*slots, shadow) if s is not None and s.model is None and not s.loading]

    def _variant(self, name: str, primary: ModelSlot, label: str) -> ModelSlot:
        if label == PRIMARY:
            return primary
        assert primary.uri is not None
        uri = variant_uri(primary.uri, label)
        if uri == primary.uri:
            return primary
        return self.table.internal_slot(f"{name}@{label}", name, uri)

    def _drop_unused(self, name: str) -> None:
        """Release the variants and shadow of ``name`` that its policy no longer names: a removed variant must
        not stay loaded, be polled and reloaded, or keep its memory (2,000 PUT/DELETE rounds grew RSS)."""
        route = self._routes.get(name)
        used = {id(s) for s in (*route.slots, route.shadow)} if route is not None else set()
        for key, slot in list(self.table.slots.items()):
            if slot.name == name and key != name and id(slot) not in used:
                self.table.drop_slot(key)

    def policy(self, name: str) -> TrafficPolicy | None:
        route = self._routes.get(name)
        return route.policy if route is not None else None

    def describe(self) -> dict[str, Any]:
        out = {}
        for name in self.table.names:
            route = self._routes.get(name)
            if route is None:
                out[name] = {"variants": [{"label": PRIMARY, "weight": 1.0, **self.table.slot(name).describe()}],
                             "shadow": None}
                continue
            previous = 0.0
            variants = []
            for label, slot, cum in zip(route.labels, route.slots, route.cumulative, strict=True):
                variants.append({"label": label, "weight": round(cum - previous, 6), **slot.describe()})
                previous = cum
            shadow = None
            if route.shadow is not None:
                shadow = {"label": route.policy.shadow, **route.shadow.describe(), **self.stats[name].as_dict()}
            out[name] = {"variants": variants, "shadow": shadow, "sticky_header": route.policy.sticky_header}
        return out

    # -- the request path ----------------------------------------------------------------------------------

    def sticky_header(self, name: str) -> bytes | None:
        """The header to read for ``name``'s requests; None when ``name`` has no policy (the usual case)."""
        route = self._routes.get(name)
        return route.header if route is not None else None

    def pick(self, name: str, key: str | None) -> tuple[Model, str]:
        """The version that answers a request for ``name`` with sticky ``key`` and the variant's label."""
        route = self._routes.get(name)
        if route is None:
            return self.table.slot(name).current(), PRIMARY
        if key:
            point = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64
        else:
            point = random.random()
        i = min(bisect_right(route.cumulative, point), len(route.slots) - 1)
        model = route.slots[i].model
        if model is None:  # a variant that is not ready (yet, or any more): the primary answers
            return self.table.slot(name).current(), PRIMARY
        return model, route.labels[i]

    def shadow(self, name: str, answered: Model, x: ModelInput, pred: Prediction) -> None:
        """Queue a copy of a scored request for ``name``'s shadow, if it has one (never waits)."""
        if not self._routes:
            return
        route = self._routes.get(name)
        if route is None or route.shadow is None:
            return
        target = route.shadow.model
        if target is None or target is answered:
            return
        queue = self._ensure_worker()
        try:
            queue.put_nowait((name, answered, target, x, pred))
        except asyncio.QueueFull:
            self.stats[name].dropped += 1
            if self.observer is not None:
                self.observer.shadow_dropped(name)

    def _ensure_worker(self) -> asyncio.Queue[tuple[str, Model, Model, ModelInput, Prediction]]:
        if self._queue is None:
            self._queue = asyncio.Queue(self._queue_size)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run_shadows(self._queue))
        return self._queue

    async def _run_shadows(self, queue: asyncio.Queue[tuple[str, Model, Model, ModelInput, Prediction]]) -> None:
        while True:
            name, answered, target, x, pred = await queue.get()
            try:
                shadow_pred = await self._batcher(target).predict(x, None)
                self._compare(name, answered, target, pred, shadow_pred)
            except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never surfaced
                stats = self.stats.get(name)
                if stats is not None:
                    stats.errors += 1
                self.log.warning("shadow_failed", model=name, shadow_version=target.version, error=str(exc))

    def _compare(self, name: str, answered: Model, target: Model, pred: Prediction, shadow_pred: Prediction) -> None:
        stats = self.stats.get(name)
        if stats is None:  # the policy was removed meanwhile
            return
        answer, challenger = pred.values, shadow_pred.values
        if answer.dtype.kind in "fiu" and challenger.dtype.kind in "fiu" and not target.is_classifier:
            diff = np.abs(answer.astype(np.float64) - challenger.astype(np.float64))
            rel = diff / np.maximum(np.abs(answer.astype(np.float64)), 1e-12)
            disagreements = 0
        else:  # classifiers: labels, and the probability of each row's answered class
            disagreements = int(np.count_nonzero(answer != challenger))
            if pred.probabilities is not None and shadow_pred.probabilities is not None \
                    and pred.probabilities.shape == shadow_pred.probabilities.shape:
                diff = np.abs(pred.probabilities - shadow_pred.probabilities).max(axis=1)
            else:
                diff = np.zeros(len(answer))
            rel = diff
        stats.compared_rows += len(answer)
        stats.compared_requests += 1
        stats.sum_abs_diff += float(diff.sum())
        stats.max_abs_diff = max(stats.max_abs_diff, float(diff.max(initial=0.0)))
        stats.label_disagreements += disagreements
        stats.versions.add((answered.version, target.version))
        if self.observer is not None:
            self.observer.shadow_compared(name, target.version, diff, rel, disagreements)

    def close(self) -> None:
        if self._worker is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._worker.cancel()
            self._worker = None
