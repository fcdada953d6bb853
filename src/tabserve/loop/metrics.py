"""Live-quality metrics in numpy, equal to scikit-learn's on the same labels (the server install has no
scikit-learn): accuracy, macro F1, log-loss, ROC AUC (binary; macro one-vs-rest for more classes); MAE, RMSE,
R². A metric undefined on the rows (AUC with one class present, R² of a constant target) is left out."""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION = ("accuracy", "f1_macro", "log_loss", "roc_auc")
REGRESSION = ("mae", "rmse", "r2")
HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "log_loss": False, "roc_auc": True, "mae": False,
                    "rmse": False, "r2": True}


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None,
                           classes: list[str]) -> dict[str, float]:
    truth, predicted = np.asarray(truth, dtype=str), np.asarray(predicted, dtype=str)
    out = {"accuracy": float(np.mean(truth == predicted)), "f1_macro": f1_macro(truth, predicted)}
    if proba is not None and len(classes) == proba.shape[1] >= 2:
        index = {c: i for i, c in enumerate(classes)}
        positions = np.array([index.get(t, -1) for t in truth])
        if (positions >= 0).all():
            out["log_loss"] = log_loss(positions, proba)
            auc = roc_auc(positions, proba)
            if auc is not None:
                out["roc_auc"] = auc
    return out


def f1_macro(truth: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-learn's ``f1_score(average="macro")``: over the labels present in either, 0 where undefined."""
    scores = []
    for label in np.union1d(truth, predicted):
        tp = float(np.sum((truth == label) & (predicted == label)))
        fp = float(np.sum((truth != label) & (predicted == label)))
        fn = float(np.sum((truth == label) & (predicted != label)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def log_loss(positions: np.ndarray, proba: np.ndarray) -> float:
    """scikit-learn's ``log_loss`` (1.5+): probabilities clipped to [eps, 1 - eps] of float64."""
    eps = np.finfo(np.float64).eps
    picked = np.clip(proba[np.arange(len(positions)), positions], eps, 1 - eps)
    return float(-np.mean(np.log(picked)))


def roc_auc(positions: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary: AUC of the second class's probability; more classes: the mean of each class against the rest
    (scikit-learn's ``multi_class="ovr", average="macro"``). None when a class is absent or alone."""
    if proba.shape[1] == 2:
        return _binary_auc(positions == 1, proba[:, 1])
    scores = [_binary_auc(positions == k, proba[:, k]) for k in range(proba.shape[1])]
    return None if any(s is None for s in scores) else float(np.mean(scores))  # type: ignore[arg-type]


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(score)  # Mann-Whitney U: ties count one half, as the ROC's trapezoids do
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.r_[True, sorted_values[1:] != sorted_values[:-1], True]
    starts = np.flatnonzero(boundaries)
    counts = np.diff(starts)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(starts[:-1] + (counts + 1) / 2, counts)  # ranks a+1 .. b of a tie, averaged
    return ranks


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    truth, predicted = np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    error = truth - predicted
    out = {"mae": float(np.mean(np.abs(error))), "rmse": math.sqrt(float(np.mean(error**2)))}
    total = float(np.sum((truth - truth.mean()) ** 2))
    if len(truth) >= 2 and total > 0:
        out["r2"] = 1.0 - float(np.sum(error**2)) / total
    return out


def per_row_score(task: str, truth: np.ndarray, predicted: np.ndarray) -> tuple[str, np.ndarray]:
    """What an A/B comparison averages, row by row: correctness (accuracy) or absolute error (MAE)."""
    if task == "classification":
        return "accuracy", (np.asarray(truth, dtype=str) == np.asarray(predicted, dtype=str)).astype(np.float64)
    return "mae", np.abs(np.asarray(truth, dtype=np.float64) - np.asarray(predicted, dtype=np.float64))
