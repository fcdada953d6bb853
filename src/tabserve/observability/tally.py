"""Histogram observations recorded on the request path as one append, folded into the histogram in bulk.

prometheus_client's ``observe`` takes a lock and scans the buckets in Python (~1.5 µs), and a one-row request
recorded five: its latency, its count, and its batch's rows, queue wait and onnxruntime time. In one process (no
multiprocess folder), a ``Tally`` appends the value to a deque (thread-safe, ~50 ns) and folds what is pending
into the histogram's buckets with numpy when a scrape collects (``Metrics.collect`` calls ``fold``) or once
``FOLD_EVERY`` values wait: every scrape is exact and memory stays bounded. With a multiprocess folder, another
worker may answer the scrape, so ``tally`` gives the histogram's own ``observe`` path instead.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np

FOLD_EVERY = 4096


class Observer(Protocol):
    def observe(self, value: float) -> None: ...

    def extend(self, values: np.ndarray) -> None: ...


class Tally:
    """Values for one histogram child; ``count`` and ``total``: counter children that grow by the number of
    values and by their sum (a request counter; rows scored from the batch sizes)."""

    __slots__ = ("_bounds", "_child", "_chunks", "_count", "_pending", "_total")

    def __init__(self, child: Any, count: Any = None, total: Any = None) -> None:
        self._child = child
        self._bounds = np.asarray(child._upper_bounds, dtype=np.float64)  # the last is +Inf
        self._count = count
        self._total = total
        self._pending: deque[float] = deque()
        self._chunks: deque[np.ndarray] = deque()  # arrays of values (a batch's predictions)

    def extend(self, values: np.ndarray) -> None:
        chunks = self._chunks
        chunks.append(values)
        if len(chunks) >= FOLD_EVERY:
            self.fold()

    def observe(self, value: float) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Add what is pending to the histogram (from any thread: each value is taken exactly once)."""
        taken = drain(self._pending)
        chunks = drain(self._chunks)
        if not taken and not chunks:
            return
        values = np.asarray(taken, dtype=np.float64)
        if chunks:
            values = np.concatenate([values, *(np.asarray(c, dtype=np.float64).reshape(-1) for c in chunks)])
        observe_many(self._child, self._bounds, values)
        if self._count is not None:
            self._count.inc(len(values))
        if self._total is not None:
            self._total.inc(float(values.sum()))


def drain(pending: deque[Any]) -> list[Any]:
    """Every item of ``pending`` taken out, each exactly once even while other threads append or drain."""
    taken: list[Any] = []
    pop = pending.popleft
    try:
        while True:
            taken.append(pop())
    except IndexError:
        return taken


class Direct:
    """The same interface, observed at once (multiprocess mode: the values must be in the shared files)."""

    __slots__ = ("_child", "_count", "_total")

    def __init__(self, child: Any, count: Any = None, total: Any = None) -> None:
        self._child = child
        self._count = count
        self._total = total

    def extend(self, values: np.ndarray) -> None:
        observe_many(self._child, np.asarray(self._child._upper_bounds), values)
        if self._count is not None:
            self._count.inc(len(values))
        if self._total is not None:
            self._total.inc(float(np.nansum(values)))

    def observe(self, value: float) -> None:
        self._child.observe(value)
        if self._count is not None:
            self._count.inc()
        if self._total is not None:
            self._total.inc(value)

    def fold(self) -> None:
        return None


def observe_many(child: Any, bounds: np.ndarray, values: np.ndarray) -> None:
    """``child.observe(v)`` for each value, as one increment per bucket hit (prometheus_client has no bulk
    observe, so this writes its bucket values; tests/observability/test_metrics.py holds it to ``observe``).
    A value counts in the first bucket whose bound is at least the value; NaN in +Inf."""
    index = np.minimum(np.searchsorted(bounds, values), len(bounds) - 1)
    counts = np.bincount(index, minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        child._buckets[i].inc(float(counts[i]))
    child._sum.inc(float(np.nansum(values)))
