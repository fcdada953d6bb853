"""What the model saw of each feature: the reference for range checks and drift."""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILE_PROBS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def feature_stats(values: np.ndarray) -> dict[str, Any]:
    """Count, missing, min, max, mean, population std (ddof=0, as StandardScaler) and quantiles of one column.

    Missing values (NaN) are counted and left out of the other numbers.
    """
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise ValueError("a feature column with no values has no statistics")
    return {
        "count": int(present.size),
        "missing": int(values.size - present.size),
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "quantiles": {"probs": list(QUANTILE_PROBS),
                      "values": [float(q) for q in np.quantile(present, QUANTILE_PROBS)]},
    }


def columns_stats(X: np.ndarray) -> list[dict[str, Any]]:
    return [feature_stats(X[:, j]) for j in range(X.shape[1])]
