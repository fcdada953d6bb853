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


def record_columns(records: Sequence[PayloadRecord], schema: pa.Schema) -> dict[str, Any]:
    """The rows of ``records`` (all of one model object) as arrays, one per schema field. Runs in the writer
    thread, vectorised over the records: per record, only a few list appends hold the interpreter."""
    model = records[0].model
    counts = np.fromiter((len(r.prediction.values) for r in records), dtype=np.int64, count=len(records))
    n = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)

    owner = pa.array(np.repeat(np.arange(len(records), dtype=np.int32), counts))  # each row's record

    def each(values: list[str | None]) -> pa.Array:
        # from a list, not an object ndarray: pyarrow would import pandas (1.4 s holding the GIL) for that
        return pa.array(values, pa.string()).take(owner)

    out: dict[str, Any] = {
        "request_id": each([r.request_id for r in records]),
        "row": pa.array((np.arange(n) - starts).astype(np.int32)),
        "model": pa.array([model.name], pa.string()).take(np.zeros(n, dtype=np.int32)),
        "version": pa.array([model.version], pa.string()).take(np.zeros(n, dtype=np.int32)),
        "variant": each([r.variant for r in records]),
        "timestamp": pa.array(np.repeat(np.array([int(r.timestamp * 1_000_000) for r in records], dtype=np.int64),
                                        counts)).cast(TIMESTAMP),
        "protocol": each([r.protocol for r in records]),
    }
    columns = feature_columns(model.manifest.feature_names)
    schema_ = model.schema
    inputs = [r.inputs for r in records]
    if isinstance(inputs[0], TabularBatch):
        batches: list[TabularBatch] = inputs  # type: ignore[assignment]
        if schema_.numeric_cols:
            numeric = np.concatenate([b.numeric for b in batches]).astype(np.float64)  # type: ignore[misc]
            for j, col in enumerate(schema_.numeric_cols):
                out[columns[col]] = pa.array(numeric[:, j])
        text = np.concatenate([b.categorical for b in batches]).astype(str)
        for j, col in enumerate(schema_.categorical_cols):
            out[columns[col]] = pa.array(text[:, j], pa.string(), mask=text[:, j] == "")  # "": missing
    else:
        values = np.concatenate(inputs).astype(np.float64)  # type: ignore[arg-type]
        for col in range(values.shape[1]):
            out[columns[col]] = pa.array(values[:, col])
    predicted = np.concatenate([np.asarray(r.prediction.values).reshape(-1) for r in records])
    out["prediction"] = (pa.array(predicted.astype(str), pa.string()) if model.is_classifier else
                         pa.array(predicted.astype(np.float64)))
    if "probabilities" in schema.names:
        probas = [r.prediction.probabilities for r in records]
        if all(p is not None for p in probas):
            proba = np.concatenate(probas).astype(np.float64)  # type: ignore[arg-type]
            k = proba.shape[1]
            out["probabilities"] = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                                                            pa.array(proba.reshape(-1)))
        else:
            out["probabilities"] = pa.array([row for p, c in zip(probas, counts.tolist(), strict=True)
                                             for row in (p.tolist() if p is not None else [None] * c)],
                                            pa.list_(pa.float64()))
    return out


def read_metadata(schema: pa.Schema) -> tuple[dict[str, str], str, list[str]]:
    """(feature name -> column, task, classes) of a payload file."""
    meta = schema.metadata or {}
    features = json.loads(meta.get(FEATURES_KEY, b"{}"))
    return features, meta.get(TASK_KEY, b"").decode(), json.loads(meta.get(CLASSES_KEY, b"[]"))
