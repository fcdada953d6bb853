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
from collections.abc import Sequence
from operator import attrgetter
from types import NoneType

import numpy as np
import pyarrow as pa

from tabserve.core.model import Model
from tabserve.core.schema import ModelInput, TabularBatch

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


class QueuedRows:
    """One model's predictions waiting for the writer thread, as columns of the references the data plane handed
    over (no copy: the arrays are built per request and never written to after scoring). ``offer`` appends to
    each list under the log's lock; the writer takes the whole object. A list append allocates nothing, and
    nothing appended is tracked by the garbage collector (strings, floats, None, arrays): a queued request leaves
    no collector-tracked survivor. A tuple per request (~1.2k instructions a request of young collections under
    cachegrind, and a pass of getters in the writer) or the prediction object (full collections of the whole heap,
    ~7k) did."""

    __slots__ = ("inputs", "probabilities", "protocols", "request_ids", "times", "values", "variants")

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.variants: list[str | None] = []
        self.times: list[float] = []
        self.inputs: list[ModelInput] = []
        self.values: list[np.ndarray] = []
        self.probabilities: list[np.ndarray | None] = []
        self.protocols: list[str] = []

    @property
    def rows(self) -> int:
        return sum(map(len, self.values))


_NUMERIC, _CATEGORICAL, _DTYPE = attrgetter("numeric"), attrgetter("categorical"), attrgetter("dtype")


def record_columns(model: Model, queued: QueuedRows, schema: pa.Schema) -> list[pa.Array]:
    """The rows of ``queued`` (predictions of ``model``) as arrays in ``schema`` order. Runs in the writer
    thread, which competes with the event loop for the interpreter: a fixed number of C-level calls per column
    (a bytes join of the arrays, one conversion), no Python loop over the records."""
    values = queued.values
    n_records = len(values)
    n = queued.rows
    # Each row's record: None when every record is one row (single predictions: the common case, no gather)
    if n == n_records:
        owner = counts = None
    else:
        counts = np.fromiter(map(len, values), np.int64, n_records)
        owner = np.repeat(np.arange(n_records, dtype=np.int32), counts)

    def each(column: list[str | None]) -> pa.Array:
        # from a list, not an object ndarray: pyarrow would import pandas (1.4 s holding the GIL) for that
        if column.count(column[0]) == n_records:  # one value for the whole batch (variant, protocol)
            return (pa.nulls(n, pa.string()) if column[0] is None else
                    pa.repeat(pa.scalar(column[0], pa.string()), n))
        strings = pa.array(column, pa.string())
        return strings if owner is None else strings.take(owner)

    stamps = np.array(queued.times, dtype=np.float64) * 1e6
    out: dict[str, pa.Array] = {
        "request_id": each(queued.request_ids),  # type: ignore[arg-type]
        "row": pa.array(np.zeros(n, dtype=np.int32) if counts is None else
                        (np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)),
        "model": pa.repeat(pa.scalar(model.name, pa.string()), n),
        "version": pa.repeat(pa.scalar(model.version, pa.string()), n),
        "variant": each(queued.variants),
        "timestamp": pa.array((stamps if owner is None else stamps[owner]).astype(np.int64), TIMESTAMP),
        "protocol": each(queued.protocols),  # type: ignore[arg-type]
    }
    columns = feature_columns(model.manifest.feature_names)
    inputs = queued.inputs
    if type(inputs[0]) is TabularBatch:  # a model with text features takes nothing else: numeric and text columns
        schema_ = model.schema
        if schema_.numeric_cols:
            numeric = np.concatenate(list(map(_NUMERIC, inputs)))
            by_feature = np.ascontiguousarray(numeric.T, dtype=np.float64)
            for j, col in enumerate(schema_.numeric_cols):
                out[columns[col]] = pa.array(by_feature[j])
        text = np.concatenate(list(map(_CATEGORICAL, inputs))).astype(str)
        for j, col in enumerate(schema_.categorical_cols):
            out[columns[col]] = pa.array(text[:, j], pa.string(), mask=text[:, j] == "")  # "": missing
    else:
        by_feature = np.ascontiguousarray(_joined(inputs).T, dtype=np.float64)  # a row per feature
        for col in range(by_feature.shape[0]):
            out[columns[col]] = pa.array(by_feature[col])
    predicted = _joined(values)
    out["prediction"] = _predictions(predicted) if model.is_classifier else pa.array(predicted.astype(np.float64))
    if "probabilities" in schema.names:
        out["probabilities"] = _probabilities(queued.probabilities, counts, n)
    return [out[name] for name in schema.names]


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(arrays)`` along rows. Arrays of one dtype, each contiguous (a request's own input, a
    slice of a batch's output), are joined as bytes: ~45 ns an array against ~110."""
    first = arrays[0]
    dtype = first.dtype
    if not dtype.hasobject and first.ndim and list(map(_DTYPE, arrays)).count(dtype) == len(arrays):
        try:
            raw = b"".join(arrays)  # type: ignore[arg-type]
        except (BufferError, TypeError, ValueError):  # a strided view
            pass
        else:
            return np.frombuffer(raw, dtype).reshape(-1, *first.shape[1:])
    return np.concatenate(arrays)


def _probabilities(probabilities: list[np.ndarray | None], counts: np.ndarray | None, n: int) -> pa.Array:
    if NoneType not in map(type, probabilities):  # the common case: every record has them (no == on arrays)
        flat = _joined(probabilities).astype(np.float64, copy=False)  # [n, K]
        offsets = np.arange(n + 1, dtype=np.int32) * np.int32(flat.shape[1])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)))
    has_record = np.fromiter((p is not None for p in probabilities), bool, len(probabilities))
    has = has_record if counts is None else np.repeat(has_record, counts)
    present = [p for p in probabilities if p is not None]
    flat = np.concatenate(present).astype(np.float64, copy=False) if present else np.zeros((0, 0))
    k = flat.shape[1] if present else 0
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(has, k, 0), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)), mask=pa.array(~has))


def _predictions(labels: np.ndarray) -> pa.Array:
    """Class labels as strings, as ``str()`` writes them."""
    if labels.dtype.kind in "iu":
        return pa.array(labels).cast(pa.string())  # Arrow's integer formatting is str()'s, in C++
    if labels.dtype.kind == "O":  # text labels: a list of str converts without numpy's fixed-width copy
        values = labels.tolist()
        try:
            return pa.array(values, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # not all str
            return pa.array([str(v) for v in values], pa.string())
    return pa.array(labels.astype(str), pa.string())


def read_metadata(schema: pa.Schema) -> tuple[dict[str, str], str, list[str]]:
    """(feature name -> column, task, classes) of a payload file."""
    meta = schema.metadata or {}
    features = json.loads(meta.get(FEATURES_KEY, b"{}"))
    return features, meta.get(TASK_KEY, b"").decode(), json.loads(meta.get(CLASSES_KEY, b"[]"))
