"""Global feature importance at train/import time, per input feature, for the manifest's ``importance``.

- impurity: what the fitted trees say -- scikit-learn's ``feature_importances_`` (mean decrease in
  impurity), LightGBM's and XGBoost's total gain, normalised to sum to 1; a one-hot encoded feature gets
  the sum of its columns. Biased towards features with many distinct values, and computed on the
  training data: a ranking, not a measure of what the model needs.
- permutation: how much the holdout score (r2 for a regression, accuracy for a classifier) drops when one
  feature's column is shuffled, mean and std over ``repeats`` shuffles (on up to ``MAX_ROWS`` rows). On the holdout, so it measures what the model
  uses on unseen data; an imported model is permuted on its sample, when the sample has the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, r2_score

from tabserve.core.manifest import Feature, Task
from tabserve.training.convert import registry as convert_registry
from tabserve.training.estimators import model_input

REPEATS = 5
MAX_ROWS = 2000


def global_importance(model: Any, final: Any, features: Sequence[Feature], columns: Sequence[int] | None,
                      rows: pd.DataFrame, y: Any, task: Task, *, seed: int = 0, checked_on: str = "holdout",
                      repeats: int = REPEATS) -> dict[str, Any]:
    """The manifest's ``importance``: ``columns`` maps the final estimator's columns to feature indices (from
    the explain data; None when unknown, then impurity is left out)."""
    names = [f.name for f in features]
    notes: list[str] = []
    impurity = None
    per_column = column_importance(final)
    if per_column is None:
        notes.append(f"{type(final).__name__} has no impurity-based importance")
    elif columns is None or len(columns) != len(per_column):
        notes.append("impurity importance left out: the model's columns could not be traced back to features")
    else:
        impurity = by_feature(per_column, columns, names)
    result: dict[str, Any] = {"impurity": impurity, "notes": notes}
    if y is None:
        notes.append(f"no permutation importance: the {checked_on} has no target column")
        return result
    rows, y = _subsample(rows[names], np.asarray(y), seed)
    scoring = "r2" if task == "regression" else "accuracy"
    metric = r2_score if task == "regression" else accuracy_score
    if len(rows) < 2:
        notes.append(f"no permutation importance: {len(rows)} {checked_on} row(s)")
        return result
    drops = permutation_drops(model, rows, y, metric, repeats, seed)
    result["permutation"] = {n: {"mean": float(d.mean()), "std": float(d.std())}
                             for n, d in zip(names, drops, strict=True)}
    result |= {"scoring": scoring, "checked_on": checked_on, "rows": len(rows), "repeats": repeats}
    return result


def permutation_drops(model: Any, rows: pd.DataFrame, y: np.ndarray, metric: Any, repeats: int,
                      seed: int) -> np.ndarray:
    """[features, repeats]: the score minus the score with that feature's column shuffled. (scikit-learn's
    ``permutation_importance`` wants an estimator with ``fit``; a native Booster has none.)"""
    rng = np.random.default_rng(seed)
    baseline = metric(y, model.predict(model_input(model, rows)))
    drops = np.zeros((rows.shape[1], repeats))
    for j, column in enumerate(rows.columns):
        shuffled = rows.copy()
        for r in range(repeats):
            shuffled[column] = rows[column].to_numpy()[rng.permutation(len(rows))]
            drops[j, r] = baseline - metric(y, model.predict(model_input(model, shuffled)))
    return drops


def column_importance(final: Any) -> np.ndarray | None:
    """Impurity (gain) importance per column of the final estimator, summing to 1, or None."""
    from tabserve.training.native import NativeRegressor

    model = final.booster if isinstance(final, NativeRegressor) else final
    library = convert_registry.library(model)
    if library == "lightgbm":
        booster = getattr(model, "booster_", model)
        values = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    elif library == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        n = int(booster.num_features())
        names = booster.feature_names or [f"f{i}" for i in range(n)]
        scores = booster.get_score(importance_type="total_gain")
        values = np.array([float(scores.get(name, 0.0)) for name in names])
    else:
        try:
            values = np.asarray(model.feature_importances_, dtype=np.float64)
        except (AttributeError, ValueError, TypeError):  # linear models, or HistGradientBoosting (none)
            return None
    total = values.sum()
    return values / total if total > 0 else values


def by_feature(per_column: np.ndarray, columns: Sequence[int], names: Sequence[str]) -> dict[str, float]:
    totals = np.zeros(len(names))
    np.add.at(totals, np.asarray(columns, dtype=np.int64), per_column)
    return {n: float(v) for n, v in zip(names, totals, strict=True)}


def _subsample(rows: pd.DataFrame, y: np.ndarray, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    if len(rows) <= MAX_ROWS:
        return rows, y
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), MAX_ROWS, replace=False))
    return rows.iloc[keep], y[keep]
