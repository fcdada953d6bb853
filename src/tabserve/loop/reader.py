"""Read the payload log and the feedback back, and join them by (request id, row).

Published files never change (``store.py``), so a ``LogReader`` keeps what it read by file name and, on each
refresh, reads only files it has not seen and forgets those that left the window: that is all "incremental"
means here. The join itself is recomputed from the cached columns each time (a hash join in pandas over the
window's rows). The cache holds the columns quality needs, not the features; ``training_rows`` reads the
features directly, once.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tabserve.loop.columns import read_metadata
from tabserve.loop.store import FEEDBACK, LogStore

PAYLOAD = "payload"
QUALITY_COLUMNS = ("request_id", "row", "version", "variant", "timestamp", "prediction", "probabilities")
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class Joined:
    """Labelled predictions of one model in a window, and what the window holds besides."""

    frame: pd.DataFrame  # request_id, row, version, variant, timestamp, prediction, [probabilities], label
    task: str
    classes: list[str]
    predictions: int  # logged rows in the window
    feedback: int  # distinct labelled (request id, row) pairs received for the window's dates
    unmatched: int  # of those, labels whose prediction is not (yet) in the log


class LogReader:
    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._tables: dict[str, pa.Table] = {}
        self._meta: dict[str, tuple[str, list[str]]] = {}
        self._ids: dict[str, frozenset[str]] = {}
        self._lock = threading.RLock()

    def refresh(self, model: str, since: dt.date | None) -> tuple[list[str], list[str]]:
        """Read the new files of ``model`` since ``since``; returns (payload, feedback) file names."""
        with self._lock:
            payload = self.store.parts(model, PAYLOAD, since)
            feedback = self.store.parts(model, FEEDBACK, since)
            for name in payload:
                if name not in self._tables:
                    self._read(name, QUALITY_COLUMNS)
            for name in feedback:
                if name not in self._tables:
                    self._read(name, None)
            return payload, feedback

    def forget_except(self, keep: set[str]) -> None:
        with self._lock:
            for name in [n for n in self._tables if n not in keep]:
                self._tables.pop(name, None)
                self._meta.pop(name, None)
                self._ids.pop(name, None)

    def _read(self, name: str, columns: tuple[str, ...] | None) -> None:
        schema = pq.read_schema(self.store.path(name))
        wanted = [c for c in columns if c in schema.names] if columns else None
        table = pq.read_table(self.store.path(name), columns=wanted)
        self._tables[name] = table  # its ids as a set only when feedback asks (_file_ids): ~0.2 us a row
        if columns is not None:
            _, task, classes = read_metadata(schema)
            self._meta[name] = (task, classes)

    def known(self, model: str, request_ids: set[str], since: dt.date | None) -> set[str]:
        """Those of ``request_ids`` in the published log of ``model`` (files since ``since``)."""
        if not request_ids:
            return set()
        with self._lock:
            payload, _ = self.refresh(model, since)
            return {rid for rid in request_ids if any(rid in self._file_ids(name) for name in payload)}

    def _file_ids(self, name: str) -> frozenset[str]:
        ids = self._ids.get(name)
        if ids is None:
            ids = self._ids[name] = frozenset(self._tables[name].column("request_id").to_pylist())
        return ids

    def joined(self, model: str, since: dt.datetime | None) -> Joined:
        with self._lock:
            payload, feedback = self.refresh(model, since.date() if since else None)
            logged = [self._tables[n] for n in payload]
            labelled = [self._tables[n] for n in feedback]
            known = _all_ids(map(self._file_ids, payload)) if labelled else set()
            task, classes = self._meta[payload[-1]] if payload else ("", [])
        predictions = _frame(logged, QUALITY_COLUMNS)
        if since is not None and len(predictions):
            predictions = predictions[predictions["timestamp"] >= pd.Timestamp(since)]
        labels = _latest_labels(_frame(labelled, ("request_id", "row", "label", "received_at")))
        frame = predictions.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"], how="inner")
        frame["variant"] = frame["variant"].fillna(DEFAULT_VARIANT)
        # Labels whose prediction is not in the log at all (not merely outside the window).
        unmatched = int((~labels["request_id"].isin(known)).sum()) if len(labels) else 0
        return Joined(frame, task, classes, len(predictions), len(labels), unmatched)


def training_rows(store: LogStore, model: str, since: dt.datetime | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Logged rows with their latest label (column ``label``), features under their own names; and the
    (feature -> column) map of the newest file. Reads whole files: for ``tabserve retrain --from-log``."""
    day = since.date() if since else None
    frames, features = [], {}
    for name in store.parts(model, PAYLOAD, day):
        table = pq.read_table(store.path(name))
        features, _, _ = read_metadata(table.schema)
        frames.append(table.drop_columns([c for c in ("probabilities",) if c in table.column_names]))
    predictions = _frame(frames, ("request_id", "row", "timestamp", "version"))
    if since is not None and len(predictions):
        predictions = predictions[predictions["timestamp"] >= pd.Timestamp(since)]
    labels = _latest_labels(_frame([pq.read_table(store.path(n)) for n in store.parts(model, FEEDBACK, day)],
                                   ("request_id", "row", "label", "received_at")))
    joined = predictions.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"], how="inner")
    return joined, features


def _frame(tables: list[pa.Table], columns: tuple[str, ...]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    table = pa.concat_tables(tables, promote_options="default")
    return table.to_pandas(types_mapper=None)


def _latest_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One label per (request id, row): the last received wins (a correction)."""
    if not len(labels):
        return labels
    return labels.sort_values("received_at", kind="stable").drop_duplicates(["request_id", "row"], keep="last")


def _all_ids(sets: Iterable[frozenset[str]]) -> set[str]:
    out: set[str] = set()
    for ids in sets:
        out |= ids
    return out
