"""The manifest of a trained model: what tabserve.json records about its data, quality and origin."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from tabserve import __version__
from tabserve.core.manifest import Feature, Task
from tabserve.observability.predictions import PROBS
from tabserve.training.export import ExportedModel
from tabserve.training.parity import Parity
from tabserve.training.stats import feature_stats

# name in the manifest -> distributions that provide it (xgboost ships as xgboost or xgboost-cpu)
LIBRARIES = {"scikit-learn": ("scikit-learn",), "skl2onnx": ("skl2onnx",), "onnx": ("onnx",),
             "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "numpy": ("numpy",), "pandas": ("pandas",),
             "lightgbm": ("lightgbm",), "xgboost": ("xgboost", "xgboost-cpu"), "catboost": ("catboost",)}


def feature_entries(features: Sequence[Feature], rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The manifest's ``features``: each feature as given, numeric ones with statistics of ``rows`` (the
    training rows: what the model learnt from)."""
    entries = []
    for f in features:
        entry = f.model_dump(exclude_none=True, exclude={"stats"})
        if f.kind == "numeric":
            entry["stats"] = feature_stats(rows[f.name].to_numpy(dtype="float64", na_value=float("nan")))
        entries.append(entry)
    return entries


def build_manifest(
    *,
    name: str,
    version: str,
    task: Task,
    features: list[dict[str, Any]],
    exported: ExportedModel,
    parity: Parity,
    metrics: dict[str, float],
    training: dict[str, Any],
    source: str,
    classes: list[Any] | None = None,
    target: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every manifest field but ``model``, which ``write_bundle`` computes from the ONNX bytes.

    ``features`` from ``feature_entries``; ``data`` describes the training data for the lineage
    (fingerprint, rows, columns); ``training`` gets the exporter added.
    """
    manifest = {
        "name": name,
        "version": version,
        "task": task,
        "input": exported.input,
        "categorical_input": exported.categorical_input,
        "features": features,
        "outputs": exported.outputs,
        "classes": classes,
        "target": target,
        "metrics": metrics,
        "parity": parity.manifest(),
        "training": {**training, "exporter": exported.exporter},
        "lineage": {
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "libraries": library_versions(),
            "data": data or {},
            "source": source,
        },
    }
    return {k: v for k, v in manifest.items() if v is not None}


def prediction_quantiles(task: str, predicted: Any) -> dict[str, list[float]]:
    """A regressor's prediction quantiles on the checked rows, recorded in the manifest's ``training``: the
    server's prediction histogram takes them as its buckets (observability/predictions.py) instead of scoring
    training-like rows at every load (~45 ms of a cold start). Empty for other tasks or too few rows."""
    values = np.asarray(predicted, dtype=np.float64).reshape(-1) if task == "regression" else np.empty(0)
    values = values[np.isfinite(values)]
    if values.size < _MIN_QUANTILE_ROWS:
        return {}
    return {"prediction_quantiles": {"probs": list(PROBS), "values": np.quantile(values, PROBS).tolist()}}


_MIN_QUANTILE_ROWS = 20


def library_versions() -> dict[str, str]:
    """Versions of Python, tabserve and the libraries that made the model (those installed)."""
    versions = {"python": platform.python_version(), "tabserve": __version__}
    for name, dists in LIBRARIES.items():
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions
