"""The payload log: sampled predictions written to Parquet off the request path.

``offer`` (called by the data plane once per answered request) is a sampling countdown, a bound check and,
under one short lock, the references it was handed appended to per-model column lists (``columns.QueuedRows``:
no copy; the arrays are never written to after scoring); it never blocks on I/O nor raises. One writer thread
takes the queue once it holds a row group (or the oldest record is due), builds each column with a fixed number
of C-level calls (``columns.record_columns``), appends the row group to one open file per model version and
publishes a file (fsync, rename: ``store.py``) when it reaches ``rotate_bytes`` or is ``rotate_seconds`` old
(counted from its oldest row), and at ``close()``. Memory is bounded by the queue (``max_queue_rows``) plus one
row group per open file (``row_group_rows``). A full queue drops the record and counts its rows in
``tabserve_payload_dropped_total{model}``; what reached a published file is counted in
``tabserve_payload_rows_written_total{model}``. A crash loses what was not yet published (at most
``rotate_seconds`` of sampled traffic), never leaves a partial file where a reader looks.

Sampling is exact: each request is logged with probability ``sample``, independently, as by a coin per request;
the coin is thrown once per *logged* request instead, drawing how many requests to pass over before the next
one (a geometric count, which is what the gaps between a Bernoulli process's successes are). A request passed
over costs a truth test and a decrement; with ``sample`` 0 nothing else ever runs.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.loop.columns import QueuedRows, dictionary_columns, payload_schema, record_columns
from tabserve.loop.store import LocalStore, LogStore, part_name
from tabserve.observability.logging import get_logger

PAYLOAD = "payload"


@dataclass
class _OpenPart:
    schema: pa.Schema
    handle: BinaryIO
    publish: Any
    writer: pq.ParquetWriter
    model: str
    opened_at: float
    rows: int = 0
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0


class ParquetPayloadLog:
    def __init__(self, store: LogStore | str | os.PathLike[str], *, sample: float = 1.0,
                 max_queue_rows: int = 100_000, rotate_bytes: int = 64 * 1024 * 1024, rotate_seconds: float = 60.0,
                 row_group_rows: int = 8192, registry: CollectorRegistry | None = None,
                 recent_ids: int = 100_000, poll_seconds: float = 1.0) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"payload sample {sample} is not a fraction between 0 and 1")
        # pyarrow imports pandas at its first conversion (about 1.4 s holding the GIL here): pay that now, at
        # start-up, not in the writer thread while the event loop answers requests.
        pa.array([0.0])
        self.store = store if not isinstance(store, str | os.PathLike) else LocalStore(store)
        if isinstance(self.store, LocalStore):
            self.store.remove_stale_partials()
        self.sample = sample
        self._random = random.Random()
        # Requests to pass over before the next logged one: 0 logs every request, inf none
        self._skip: float = self._gap()
        self.max_queue_rows = max_queue_rows
        self._limit = max_queue_rows  # -1 once closing: every later offer is dropped and counted
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.row_group_rows = row_group_rows
        self.poll_seconds = poll_seconds
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.dropped = Counter("tabserve_payload_dropped", "Predicted rows the payload log dropped: its queue was "
                               "full, or writing failed", ["model"], registry=registry)
        self.written = Counter("tabserve_payload_rows_written", "Predicted rows published to the payload log",
                               ["model"], registry=registry)
        # Per model object (Model hashes by identity; no id(): that raises an audit event per call)
        self._queue: dict[Model, QueuedRows] = {}
        self._queued_rows = 0
        self._lock = threading.Lock()
        # The writer takes the queue once it holds a row group (or half the bound), or its oldest record is due
        # for publishing: each of its passes costs the event loop a few GIL hand-overs, whatever its size.
        self._drain_rows = max(1, min(row_group_rows, max_queue_rows // 2))
        self._queued_since: float | None = None  # when the writer first saw the queued records (within a poll)
        self._woken = False
        self._wake = threading.Event()
        self._closing = False
        self._flush_requested = threading.Event()
        self._flushed = threading.Event()
        self._parts: dict[tuple[str, str], _OpenPart] = {}
        # Per model object; a weak reference, so that an id reused by a later model is not taken for it and an
        # unloaded version is not kept alive here.
        self._schemas: dict[int, tuple[weakref.ref, pa.Schema]] = {}
        # Request ids written or about to be, one [ids, set or None] per drained batch, newest last: feedback
        # arriving before the next rotation still finds its request (in this process). The set is built by the
        # first lookup that needs it (feedback), not by the writer for every batch; batches are dropped whole.
        self._recent: deque[list[Any]] = deque()
        self._recent_count = 0
        self._recent_max = recent_ids
        self.log = get_logger("tabserve.payload")
        self._failed_once = False
        self._thread = threading.Thread(target=self._run, name="tabserve-payload-log", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------------------------

    def offer(self, request_id: str, model: Model, variant: str | None, timestamp: float, inputs: ModelInput,
              prediction: Prediction, protocol: str) -> None:
        if self._skip:  # passed over by sampling
            self._skip -= 1
            return
        try:
            if self.sample < 1.0:
                self._skip = self._gap()
            values = prediction.values
            rows = len(values)
            with self._lock:
                queued = self._queued_rows + rows
                if queued > self._limit:
                    full = True
                else:
                    full = False
                    q = self._queue.get(model)
                    if q is None:
                        q = self._queue[model] = QueuedRows()
                    q.request_ids.append(request_id)
                    q.variants.append(variant)
                    q.times.append(timestamp)
                    q.inputs.append(inputs)
                    q.values.append(values)
                    q.probabilities.append(prediction.probabilities)
                    q.protocols.append(protocol)
                    self._queued_rows = queued
            if full:
                self.dropped.labels(model.name).inc(rows)
            elif queued >= self._drain_rows and not self._woken:
                self._woken = True
                self._wake.set()
        except Exception:  # the log must never fail a prediction
            if not self._failed_once:
                self._failed_once = True
                self.log.exception("payload_offer_failed")

    def _gap(self) -> float:
        """How many requests to pass over before the next logged one: P(k) = (1 - p)^k p."""
        p = self.sample
        if p >= 1.0:
            return 0
        if p <= 0.0:
            return math.inf
        return math.floor(math.log(1.0 - self._random.random()) / math.log1p(-p))

    # -- lookups and lifecycle ----------------------------------------------------------------------------------

    def known(self, request_ids: set[str]) -> set[str]:
        """Those of ``request_ids`` this process logged recently: queued, in an open file or published."""
        with self._lock:
            queued = {rid for q in self._queue.values() for rid in q.request_ids}
        recent = tuple(self._recent)  # the writer thread appends and drops batches
        for batch in recent:
            if batch[1] is None:
                batch[1] = frozenset(batch[0])
        return {rid for rid in request_ids if rid in queued or any(rid in batch[1] for batch in recent)}

    def flush(self, timeout: float = 30.0) -> None:
        """Publish everything offered so far (tests, and before a process hands over)."""
        self._flushed.clear()
        self._flush_requested.set()
        self._wake.set()
        self._flushed.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._limit = -1
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    # -- the writer thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            closing = self._closing
            flush = self._flush_requested.is_set()
            self._flush_requested.clear()
            now = time.time()
            if self._queued_rows and self._queued_since is None:
                self._queued_since = now  # the writer's first sight of them: no clock read per offer
            oldest = min([part.opened_at for part in self._parts.values()] + [self._queued_since or now])
            if closing or flush or self._queued_rows >= self._drain_rows or now - oldest >= self.rotate_seconds:
                self._drain()
            for key, part in list(self._parts.items()):
                if closing or flush or now - part.opened_at >= self.rotate_seconds:
                    self._publish(key, part)
            if flush:
                self._flushed.set()
            if closing:
                self._drain()
                for key, part in list(self._parts.items()):
                    self._publish(key, part)
                return

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, {}
            self._queued_rows = 0
            self._woken = False
            for q in batch.values():  # under the lock: known() finds every id, queued or taken
                self._remember(q.request_ids)
        since = self._queued_since or time.time()
        self._queued_since = None
        for model, q in batch.items():  # one table per model object: its columns built at once
            try:
                self._append(model, q, since)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the log
                self._failed(model.name, q.rows, exc)

    def _append(self, model: Model, queued: QueuedRows, since: float) -> None:
        key = (model.name, model.version)
        cached = self._schemas.get(id(model))
        if cached is not None and cached[0]() is model:
            schema = cached[1]
        else:
            if len(self._schemas) > 64:
                self._schemas.clear()
            schema = payload_schema(model)
            self._schemas[id(model)] = (weakref.ref(model), schema)
        part = self._parts.get(key)
        if part is not None and part.schema != schema:  # a different bundle under the same version
            self._publish(key, part)
        table = pa.Table.from_arrays(record_columns(model, queued, schema), schema=schema)
        for start in range(0, table.num_rows, self.row_group_rows):  # row groups, and files, stay bounded
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = self._open(model.name, schema, since)
            chunk = table.slice(start, self.row_group_rows)
            part.pending.append(chunk)
            part.pending_rows += chunk.num_rows
            if part.pending_rows >= self.row_group_rows:
                self._write_pending(part)
                if part.handle.tell() >= self.rotate_bytes:
                    self._publish(key, part)

    def _open(self, model: str, schema: pa.Schema, since: float) -> _OpenPart:
        """A new file for rows the oldest of which was offered at ``since``: it is published ``rotate_seconds``
        after that."""
        handle, publish = self.store.open_partial(part_name(model, PAYLOAD, time.time()))
        # zstd level 1: 0.27 us a row against 0.64 at the default level with a dictionary tried on every column
        # (measured on the demo model's rows), the file 20 % smaller than snappy's.
        writer = pq.ParquetWriter(handle, schema, compression="zstd", compression_level=1,
                                  use_dictionary=dictionary_columns(schema))
        return _OpenPart(schema, handle, publish, writer, model, since)

    def _write_pending(self, part: _OpenPart) -> None:
        if part.pending:
            table = pa.concat_tables(part.pending)
            part.pending.clear()
            part.pending_rows = 0
            part.writer.write_table(table, row_group_size=max(table.num_rows, 1))
            part.rows += table.num_rows

    def _publish(self, key: tuple[str, str], part: _OpenPart) -> None:
        del self._parts[key]
        pending = part.pending_rows
        try:
            self._write_pending(part)
            part.writer.close()
            if part.rows:
                part.publish()
                self.written.labels(part.model).inc(part.rows)
            else:
                part.handle.close()
                with contextlib.suppress(OSError):
                    os.unlink(part.handle.name)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a full disk: count the loss, keep serving
            with contextlib.suppress(Exception):
                part.handle.close()
            self._failed(part.model, part.rows + pending, exc)

    def _remember(self, ids: list[str]) -> None:
        recent = self._recent
        recent.append([ids, None])
        self._recent_count += len(ids)
        while len(recent) > 1 and self._recent_count - len(recent[0][0]) >= self._recent_max:
            self._recent_count -= len(recent.popleft()[0])

    def _failed(self, model: str, rows: int, exc: Exception) -> None:
        self.dropped.labels(model).inc(rows)
        self.log.error("payload_write_failed", model=model, rows=rows, error=repr(exc))
