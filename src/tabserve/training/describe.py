"""The manifest of a trained model: what tabserve.json records about its data, quality and origin."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from tabserve import __version__
from tabserve.training.data import Dataset, Split
from tabserve.training.export import ExportedModel
from tabserve.training.parity import Parity
from tabserve.training.stats import columns_stats

LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas")


def build_manifest(
    *,
    name: str,
    version: str,
    data: Dataset,
    split: Split,
    exported: ExportedModel,
    metrics: dict[str, float],
    parity: Parity,
    training: dict[str, Any],
    source: str,
) -> dict[str, Any]:
    """Every manifest field but ``model``, which ``write_bundle`` computes from the ONNX bytes.

    Feature statistics describe the training split: the rows the model learnt from.
    """
    target = data.target
    return {
        "name": name,
        "version": version,
        "task": target.task,
        "input": exported.input,
        "features": [
            {"name": n, "dtype": dt, "stats": stats}
            for n, dt, stats in zip(data.features, data.feature_dtypes, columns_stats(split.X_train),
                                    strict=True)
        ],
        "outputs": exported.outputs,
        "classes": target.classes,
        "target": {"name": target.name, "dtype": target.dtype},
        "metrics": metrics,
        "parity": parity.manifest(),
        "training": {**training, "rows_train": len(split.y_train), "rows_holdout": len(split.y_holdout),
                     "exporter": exported.exporter},
        "lineage": {
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "libraries": library_versions(),
            "data": {"fingerprint": data.fingerprint, "rows": data.rows, "columns": data.columns},
            "source": source,
        },
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "tabserve": __version__}
    for dist in LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions
