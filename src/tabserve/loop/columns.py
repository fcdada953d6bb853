"""Payload records as Parquet columns, and the names a reader finds them by.

Every row of a request is one row of the log: ``request_id``, ``row`` (its index in the request), ``model``,
``version``, ``variant``, ``timestamp`` (UTC), ``protocol``, one column per feature under the feature's name
(numeric features as float64, NaN when missing; text features as strings, null when missing), ``prediction``
(the class label as a string, or the regression value) and, for classifiers with probabilities,
``probabilities`` (a list in the order of the ``tabserve.classes`` metadata: the manifest's classes). A feature
named like one of these columns is stored as ``feature.NAME``; the ``tabserve.features`` metadata maps every
feature to its column.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tabserve.core.model import Model
from tabserve.core.schema import TabularBatch
from tabserve.observability.payload import PayloadRecord

META_COLUMNS = ("request_id", "row", "model", "version", "variant", "timestamp", "protocol", "prediction",
                "probabilities")
FEATURES_KEY = b"tabserve.features"
CLASSES_KEY = b"tabserve.classes"
TASK_KEY = b"tabserve.task"
TIMESTAMP = pa.timestamp("us", tz="UTC")


def feature_columns(names: Sequence[str]) -> list[str]:
    taken = set(META_COLUMNS)
    return [f"feature.{n}" if n in taken else n for n in names]


def has_probabilities(model: Model) -> bool:
    return model.is_classifier and model.manifest.output("probabilities") is not None


def payload_schema(model: Model) -> pa.Schema:
    manifest = model.manifest
    names = manifest.feature_names
    columns = feature_columns(names)
    fields = [pa.field("request_id", pa.string()), pa.field("row", pa.int32()), pa.field("model", pa.string()),
              pa.field("version", pa.string()), pa.field("variant", pa.string()), pa.field("timestamp", TIMESTAMP),
              pa.field("protocol", pa.string())]
    fields += [pa.field(col, pa.string() if f.kind == "categorical" else pa.float64())
               for col, f in zip(columns, manifest.features, strict=True)]
    fields.append(pa.field("prediction", pa.string() if model.is_classifier else pa.float64()))
    if has_probabilities(model):
        fields.append(pa.field("probabilities", pa.list_(pa.float64())))
    metadata = {FEATURES_KEY: json.dumps(dict(zip(names, columns, strict=True))).encode(),
                TASK_KEY: manifest.task.encode(),
                CLASSES_KEY: json.dumps([str(c) for c in model.classes or []]).encode()}
    return pa.schema(fields, metadata=metadata)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: few distinct strings (model, variant, text features, class
    labels). Request ids and numbers are (nearly) all distinct: a dictionary there is built, then dropped."""
    return [f.name for f in schema if f.type == pa.string() and f.name != "request_id"]


class PendingRows:
    """One model's predictions waiting for the writer thread, column by column: the request path appends each
    record's arrays to growing byte buffers, and its ids, times and labels to lists of objects that exist
    anyway. Keeping the records themselves (record, prediction, arrays and their bases: ~8 objects a
    request) for the writer to read cold and free later cost the server 2-4 us per request (measured, one-row
    predictions); these appends allocate nothing per request, and the writer reads each column as one buffer.
    Object arrays (string class labels) and ``TabularBatch`` inputs, which have no raw bytes, are kept as they
    are."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.rows = 0
        self.request_ids: list[str] = []
        self.variants: list[str | None] = []
        self.protocols: list[str] = []
        self.times = array("d")
        self.counts = array("q")  # rows per record
        self.inputs = bytearray()
        self.inputs_dtype: np.dtype | None = None
        self.tabular: list[TabularBatch] = []
        self.values = bytearray()
        self.values_dtype: np.dtype | None = None
        self._objects = False  # object labels (strings): kept as Python objects, not bytes
        self.value_objects: list[Any] = []
        self.proba = bytearray()
        self.proba_dtype: np.dtype | None = None
        self.proba_missing: list[int] = []  # records without probabilities (their rows are null)
        self.logs_proba = has_probabilities(model)

    def add(self, record: PayloadRecord) -> int:
        """Append ``record`` (of ``self.model``); returns its number of rows. On the request path: the common
        case (contiguous arrays of the dtypes seen first) is a few buffer extends and list appends."""
        pred = record.prediction
        values, x, proba = pred.values, record.inputs, pred.probabilities
        if (type(x) is not np.ndarray or x.dtype is not self.inputs_dtype or values.dtype is not self.values_dtype
                or self._objects or (proba is not None and proba.dtype is not self.proba_dtype)):
            return self._add_any(record)
        inputs_end, values_end = len(self.inputs), len(self.values)
        try:
            self.inputs.extend(x)  # the raw bytes, no object made
            self.values.extend(values)
            if proba is not None:
                self.proba.extend(proba)
        except TypeError:  # a strided view: undone, then copied the general way
            del self.inputs[inputs_end:], self.values[values_end:]
            return self._add_any(record)
        if proba is None and self.logs_proba:
            self.proba_missing.append(len(self.counts))
        n = len(values)
        self.request_ids.append(record.request_id)  # inline, as in _add_fields: a call costs 10 % of add
        self.variants.append(record.variant)
        self.protocols.append(record.protocol)
        self.times.append(record.timestamp)
        self.counts.append(n)
        self.rows += n
        return n

    def _add_any(self, record: PayloadRecord) -> int:
        """``add`` for the first record, a ``TabularBatch``, object labels, strided views or another dtype."""
        pred = record.prediction
        values, x, proba = pred.values, record.inputs, pred.probabilities
        array_input = type(x) is np.ndarray
        if self.values_dtype is None:
            self.inputs_dtype = x.dtype if array_input else None  # type: ignore[union-attr]
            self.values_dtype = values.dtype
            self._objects = values.dtype.hasobject
        # The steps that may fail (a dtype conversion) first, undone on failure: the columns stay aligned.
        inputs_end, values_end = len(self.inputs), len(self.values)
        try:
            if array_input:
                _extend(self.inputs, x, self.inputs_dtype)  # type: ignore[arg-type]
            if not self._objects:
                _extend(self.values, values, self.values_dtype)
            if proba is not None:
                if self.proba_dtype is None:
                    self.proba_dtype = proba.dtype
                _extend(self.proba, proba, self.proba_dtype)
        except BaseException:
            del self.inputs[inputs_end:], self.values[values_end:]
            raise
        if not array_input:
            self.tabular.append(x)  # type: ignore[arg-type]
        if self._objects:
            self.value_objects.extend(values.tolist())
        if proba is None and self.logs_proba:
            self.proba_missing.append(len(self.counts))
        return self._add_fields(record, len(values))

    def _add_fields(self, record: PayloadRecord, n: int) -> int:
        self.request_ids.append(record.request_id)
        self.variants.append(record.variant)
        self.protocols.append(record.protocol)
        self.times.append(record.timestamp)
        self.counts.append(n)
        self.rows += n
        return n

    def columns(self, schema: pa.Schema) -> list[pa.Array]:
        """The rows as arrays in ``schema`` order. Runs in the writer thread, which competes with the event loop
        for the interpreter: no Python loop over records or rows, a fixed number of array calls."""
        model = self.model
        n_records, n = len(self.counts), self.rows
        counts = np.frombuffer(self.counts, dtype=np.int64)
        # Each row's record: None when every record is one row (single predictions: the common case, no gather)
        owner = None if n == n_records else np.repeat(np.arange(n_records, dtype=np.int32), counts)

        def each(column: list[str | None]) -> pa.Array:
            # from a list, not an object ndarray: pyarrow would import pandas (1.4 s holding the GIL) for that
            if column.count(column[0]) == n_records:  # one value for the whole batch (variant, protocol)
                return (pa.nulls(n, pa.string()) if column[0] is None else
                        pa.repeat(pa.scalar(column[0], pa.string()), n))
            strings = pa.array(column, pa.string())
            return strings if owner is None else strings.take(owner)

        stamps = np.frombuffer(self.times, dtype=np.float64) * 1e6
        out: dict[str, pa.Array] = {
            "request_id": each(self.request_ids),  # type: ignore[arg-type]
            "row": pa.array(np.zeros(n, dtype=np.int32) if owner is None else
                            (np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)),
            "model": pa.repeat(pa.scalar(model.name, pa.string()), n),
            "version": pa.repeat(pa.scalar(model.version, pa.string()), n),
            "variant": each(self.variants),
            "timestamp": pa.array((stamps if owner is None else stamps[owner]).astype(np.int64), TIMESTAMP),
            "protocol": each(self.protocols),  # type: ignore[arg-type]
        }
        columns = feature_columns(model.manifest.feature_names)
        schema_ = model.schema
        if self.tabular:  # numeric and text columns
            if schema_.numeric_cols:
                numeric = np.concatenate([b.numeric for b in self.tabular])  # type: ignore[misc]
                by_feature = np.ascontiguousarray(numeric.T, dtype=np.float64)
                for j, col in enumerate(schema_.numeric_cols):
                    out[columns[col]] = pa.array(by_feature[j])
            text = np.concatenate([b.categorical for b in self.tabular]).astype(str)
            for j, col in enumerate(schema_.categorical_cols):
                out[columns[col]] = pa.array(text[:, j], pa.string(), mask=text[:, j] == "")  # "": missing
        else:
            numeric = np.frombuffer(self.inputs, dtype=self.inputs_dtype).reshape(n, -1)
            by_feature = np.ascontiguousarray(numeric.T, dtype=np.float64)  # one copy, a row per feature
            for col in range(by_feature.shape[0]):
                out[columns[col]] = pa.array(by_feature[col])
        predicted = (np.array(self.value_objects, dtype=object) if self.value_objects else
                     np.frombuffer(self.values, dtype=self.values_dtype))
        out["prediction"] = (pa.array(predicted.astype(str), pa.string()) if model.is_classifier else
                             pa.array(predicted.astype(np.float64)))
        if "probabilities" in schema.names:
            out["probabilities"] = self._probabilities(counts, n)
        return [out[name] for name in schema.names]

    def _probabilities(self, counts: np.ndarray, n: int) -> pa.Array:
        flat = np.frombuffer(self.proba, dtype=self.proba_dtype or np.float64).astype(np.float64)
        has = np.ones(n, dtype=bool)
        if self.proba_missing:
            has[np.repeat(np.isin(np.arange(len(counts)), self.proba_missing), counts)] = False
        present = int(has.sum())
        k = flat.size // present if present else 0
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.where(has, k, 0), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(~has))


def _extend(buffer: bytearray, values: np.ndarray, dtype: np.dtype) -> None:
    if values.dtype is not dtype and values.dtype != dtype:  # the model's first record fixed the column's dtype
        values = values.astype(dtype)
    try:
        buffer.extend(values)  # its raw bytes, no object made
    except TypeError:  # a strided view
        buffer.extend(np.ascontiguousarray(values))


def read_metadata(schema: pa.Schema) -> tuple[dict[str, str], str, list[str]]:
    """(feature name -> column, task, classes) of a payload file."""
    meta = schema.metadata or {}
    features = json.loads(meta.get(FEATURES_KEY, b"{}"))
    return features, meta.get(TASK_KEY, b"").decode(), json.loads(meta.get(CLASSES_KEY, b"[]"))
