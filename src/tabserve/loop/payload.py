"""The payload log: sampled predictions written to Parquet off the request path.

``offer`` (called by the data plane once per answered request) samples, then appends to a queue bounded in rows
and returns; it takes one short lock and never blocks on I/O nor raises. One writer thread turns the records into
columns, streams them as row groups into one open file per model version and publishes a file (fsync, rename:
``store.py``) when it reaches ``rotate_bytes`` or ``rotate_seconds``, and at ``close()``. Memory is bounded by the
queue (``max_queue_rows``) plus one row group per open file (``row_group_rows``). A full queue drops the record and
counts its rows in ``tabserve_payload_dropped_total{model}``; what reached a published file is counted in
``tabserve_payload_rows_written_total{model}``. A crash loses what was not yet published (at most
``rotate_seconds`` of sampled traffic), never leaves a partial file where a reader looks.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter

from tabserve.loop.columns import payload_schema, record_columns
from tabserve.loop.store import LocalStore, LogStore, part_name
from tabserve.observability.logging import get_logger
from tabserve.observability.payload import PayloadRecord

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
                 recent_ids: int = 100_000, poll_seconds: float = 0.2) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"payload sample {sample} is not a fraction between 0 and 1")
        # pyarrow imports pandas at its first conversion (about 1.4 s holding the GIL here): pay that now, at
        # start-up, not in the writer thread while the event loop answers requests.
        pa.array([0.0])
        self.store = store if not isinstance(store, str | os.PathLike) else LocalStore(store)
        if isinstance(self.store, LocalStore):
            self.store.remove_stale_partials()
        self.sample = sample
        self.max_queue_rows = max_queue_rows
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.row_group_rows = row_group_rows
        self.poll_seconds = poll_seconds
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.dropped = Counter("tabserve_payload_dropped", "Predicted rows the payload log dropped: its queue was "
                               "full, or writing failed", ["model"], registry=registry)
        self.written = Counter("tabserve_payload_rows_written", "Predicted rows published to the payload log",
                               ["model"], registry=registry)
        self._queue: deque[PayloadRecord] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._flush_requested = threading.Event()
        self._flushed = threading.Event()
        self._parts: dict[tuple[str, str], _OpenPart] = {}
        # Per model object; a weak reference, so that an id reused by a later model is not taken for it and an
        # unloaded version is not kept alive here.
        self._schemas: dict[int, tuple[weakref.ref, pa.Schema]] = {}
        # Request ids written or about to be, newest last: feedback arriving before the next rotation still
        # finds its request (in this process).
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_max = recent_ids
        self.log = get_logger("tabserve.payload")
        self._failed_once = False
        self._thread = threading.Thread(target=self._run, name="tabserve-payload-log", daemon=True)
        self._thread.start()

    # -- the request path -------------------------------------------------------------------------------------

    def offer(self, record: PayloadRecord) -> None:
        try:
            if self.sample < 1.0 and random.random() >= self.sample:
                return
            rows = len(record.prediction.values)
            with self._lock:
                if self._closing or self._queued_rows + rows > self.max_queue_rows:
                    full = True
                else:
                    full = False
                    self._queued_rows += rows
                    self._queue.append(record)
            if full:
                self.dropped.labels(record.model.name).inc(rows)
            elif self._queued_rows > self.max_queue_rows // 2:
                self._wake.set()
        except Exception:  # the log must never fail a prediction
            if not self._failed_once:
                self._failed_once = True
                self.log.exception("payload_offer_failed")

    # -- lookups and lifecycle ----------------------------------------------------------------------------------

    def known(self, request_ids: set[str]) -> set[str]:
        """Those of ``request_ids`` this process logged recently: queued, in an open file or published."""
        with self._lock:
            queued = {r.request_id for r in self._queue}
        recent = self._recent
        return {rid for rid in request_ids if rid in queued or rid in recent}

    def flush(self, timeout: float = 30.0) -> None:
        """Publish everything offered so far (tests, and before a process hands over)."""
        self._flushed.clear()
        self._flush_requested.set()
        self._wake.set()
        self._flushed.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
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
            self._drain()
            now = time.time()
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
            batch, self._queue = self._queue, deque()
            self._queued_rows = 0
        groups: dict[int, list[PayloadRecord]] = {}
        for record in batch:  # one table per model object: its columns built at once
            groups.setdefault(id(record.model), []).append(record)
        for records in groups.values():
            try:
                self._append(records)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the log
                self._failed(records[0].model.name, sum(len(r.prediction.values) for r in records), exc)

    def _append(self, records: list[PayloadRecord]) -> None:
        model = records[0].model
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
        table = pa.Table.from_pydict(record_columns(records, schema), schema=schema)
        for record in records:
            self._remember(record.request_id)
        for start in range(0, table.num_rows, self.row_group_rows):  # row groups, and files, stay bounded
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = self._open(model.name, schema)
            chunk = table.slice(start, self.row_group_rows)
            part.pending.append(chunk)
            part.pending_rows += chunk.num_rows
            if part.pending_rows >= self.row_group_rows:
                self._write_pending(part)
                if part.handle.tell() >= self.rotate_bytes:
                    self._publish(key, part)

    def _open(self, model: str, schema: pa.Schema) -> _OpenPart:
        handle, publish = self.store.open_partial(part_name(model, PAYLOAD, time.time()))
        writer = pq.ParquetWriter(handle, schema, compression="zstd")
        return _OpenPart(schema, handle, publish, writer, model, time.time())

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

    def _remember(self, request_id: str) -> None:
        recent = self._recent
        recent[request_id] = None
        if len(recent) > self._recent_max:
            recent.popitem(last=False)

    def _failed(self, model: str, rows: int, exc: Exception) -> None:
        self.dropped.labels(model).inc(rows)
        self.log.error("payload_write_failed", model=model, rows=rows, error=repr(exc))
