"""``--estimator auto``: the estimator family that cross-validates best on the training rows.

Each installed family of ``options.AUTO_FAMILIES`` is scored with its default hyper-parameters, one thread
each, by k-fold cross-validation (k = ``AUTO_FOLDS``, fewer when a class has fewer rows; stratified for
classification; shuffled with the training seed) on the training rows only, so the holdout still measures
the chosen model on rows no choice has seen. The score is the manifest's first metric of the task: r2 for
regression, accuracy for classification; the highest mean wins, the earlier family on a tie.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from tabserve.core.manifest import Task
from tabserve.errors import DataError
from tabserve.training.estimators import final_estimator, installed
from tabserve.training.options import AUTO_FAMILIES, AUTO_FOLDS


@dataclass(frozen=True, slots=True)
class Choice:
    estimator: str  # the family that won
    scores: dict[str, float]  # family -> mean cross-validated score, in the order compared
    metric: str  # "r2" or "accuracy"
    folds: int
    seconds: float

    def describe(self) -> str:
        """For the manifest: how the scores were obtained."""
        return (f"{self.metric}, mean of {self.folds}-fold cross-validation on the training rows "
                "(default hyper-parameters)")


def families() -> list[str]:
    """The families ``auto`` compares: those whose library is installed."""
    return [f for f in AUTO_FAMILIES if installed(f)]


def choose(build: Callable[[str], Pipeline], X: pd.DataFrame | np.ndarray, y: np.ndarray, task: Task,
           seed: int, say: Callable[[str], None] | None = None, compared: Sequence[str] | None = None) -> Choice:
    """Cross-validate ``build(family)`` for each family (``compared``, default ``families()``); ``say`` gets
    one line per family as it is scored."""
    started = time.perf_counter()
    metric = "r2" if task == "regression" else "accuracy"
    folds = _folds(y, task)
    splitter = (KFold(folds, shuffle=True, random_state=seed) if task == "regression" else
                StratifiedKFold(folds, shuffle=True, random_state=seed))
    scores: dict[str, float] = {}
    for family in compared if compared is not None else families():
        pipeline = build(family)
        model = final_estimator(pipeline)
        # bounded: one core per fit, fits one after another (LogisticRegression's n_jobs is a no-op already)
        if "n_jobs" in model.get_params(deep=False) and not isinstance(model, LogisticRegression):
            model.set_params(n_jobs=1)
        since = time.perf_counter()
        scores[family] = float(np.mean(cross_val_score(pipeline, X, y, cv=splitter, scoring=metric, n_jobs=1,
                                                       error_score="raise")))
        if say is not None:
            say(f"auto: {family} {metric}={scores[family]:.4f} ({folds}-fold cross-validation, "
                f"{time.perf_counter() - since:.1f} s)")
    order = list(scores)  # a NaN score (a fold where the metric is undefined) never wins
    best = max(order, key=lambda f: (scores[f] if np.isfinite(scores[f]) else -np.inf, -order.index(f)))
    return Choice(best, scores, metric, folds, time.perf_counter() - started)


def _folds(y: np.ndarray, task: Task) -> int:
    if task == "regression":
        return max(2, min(AUTO_FOLDS, len(y)))
    _, counts = np.unique(y.astype(str), return_counts=True)
    if counts.min() < 2:
        raise DataError(f"--estimator auto cross-validates on the training rows, but a class has "
                        f"{counts.min()} training row; give more rows of each class or choose an --estimator")
    return int(min(AUTO_FOLDS, counts.min()))
