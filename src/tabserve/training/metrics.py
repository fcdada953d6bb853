"""Holdout metrics: how good the model is on rows it did not see."""

from __future__ import annotations

import math
from contextlib import suppress
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from tabserve.core.manifest import Task


def holdout_metrics(task: Task, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None,
                    classes: list[Any] | None) -> dict[str, float]:
    """Regression: r2, rmse, mae. Classification: accuracy, f1 (binary or macro), roc_auc (binary, ovr)."""
    rows = {"rows": float(len(y_true))}
    if task == "regression":
        return _finite({
            "r2": float(r2_score(y_true, y_pred)),
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            **rows,
        })
    labels = np.asarray(classes, dtype=y_true.dtype)
    binary = len(labels) == 2
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, average="binary" if binary else "macro",
                             pos_label=labels[1] if binary else 1)),
        **rows,
    }
    if proba is not None:
        with suppress(ValueError):  # a class absent from the holdout leaves the AUC undefined
            metrics["roc_auc"] = float(roc_auc_score(y_true, proba[:, 1]) if binary else
                                       roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                                     labels=labels))
    return _finite(metrics)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """A metric that is undefined on this holdout (NaN) is left out rather than written as NaN."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
