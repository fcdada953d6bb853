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
    if model.is_classifier and model.manifest.output("probabilities") is not None:
        fields.append(pa.field("probabilities", pa.list_(pa.float64())))
    metadata = {FEATURES_KEY: json.dumps(dict(zip(names, columns, strict=True))).encode(),
                TASK_KEY: manifest.task.encode(),
                CLASSES_KEY: json.dumps([str(c) for c in model.classes or []]).encode()}
    return pa.schema(fields, metadata=metadata)


def record_columns(record: PayloadRecord, schema: pa.Schema) -> dict[str, Any]:
    """The record's rows as arrays, one per schema field (runs in the writer thread)."""
    model = record.model
    x, pred = record.inputs, record.prediction
    n = len(pred.values)
    out: dict[str, Any] = {
        "request_id": _const(record.request_id, n),
        "row": pa.array(np.arange(n, dtype=np.int32)),
        "model": _const(model.name, n),
        "version": _const(model.version, n),
        "variant": _const(record.variant, n),
        "timestamp": pa.array(np.full(n, int(record.timestamp * 1_000_000), dtype=np.int64)).cast(TIMESTAMP),
        "protocol": _const(record.protocol, n),
    }
    columns = feature_columns(model.manifest.feature_names)
    schema_ = model.schema
    if isinstance(x, TabularBatch):
        for j, col in enumerate(schema_.numeric_cols):
            out[columns[col]] = pa.array(np.asarray(x.numeric[:, j], dtype=np.float64))  # type: ignore[index]
        for j, col in enumerate(schema_.categorical_cols):
            text = np.asarray(x.categorical[:, j]).astype(str)
            out[columns[col]] = pa.array(text, pa.string(), mask=text == "")  # "" is a missing category
    else:
        values = np.asarray(x, dtype=np.float64)
        for col in range(values.shape[1]):
            out[columns[col]] = pa.array(values[:, col])
    if model.is_classifier:
        out["prediction"] = pa.array(np.asarray(pred.values).astype(str), pa.string())
    else:
        out["prediction"] = pa.array(np.asarray(pred.values, dtype=np.float64).reshape(-1))
    if "probabilities" in schema.names:
        proba = np.asarray(pred.probabilities, dtype=np.float64) if pred.probabilities is not None else None
        if proba is None:
            out["probabilities"] = pa.nulls(n, pa.list_(pa.float64()))
        else:
            k = proba.shape[1]
            out["probabilities"] = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                                                            pa.array(proba.reshape(-1)))
    return out


def read_metadata(schema: pa.Schema) -> tuple[dict[str, str], str, list[str]]:
    """(feature name -> column, task, classes) of a payload file."""
    meta = schema.metadata or {}
    features = json.loads(meta.get(FEATURES_KEY, b"{}"))
    return features, meta.get(TASK_KEY, b"").decode(), json.loads(meta.get(CLASSES_KEY, b"[]"))


def _const(value: str | None, n: int) -> pa.Array:
    return pa.nulls(n, pa.string()) if value is None else pa.array([value] * n, pa.string())
