"""The pipelines tabserve trains: a StandardScaler followed by one estimator."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.manifest import Task
from tabserve.training.options import ESTIMATORS

_Factory = Callable[[int], BaseEstimator]

# (regression, classification) factories, each taking the seed; one entry per name in options.ESTIMATORS.
_ESTIMATORS: dict[str, tuple[_Factory, _Factory]] = {
    "random_forest": (
        lambda seed: RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=-1),
        lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1),
    ),
    "extra_trees": (
        lambda seed: ExtraTreesRegressor(n_estimators=100, random_state=seed, n_jobs=-1),
        lambda seed: ExtraTreesClassifier(n_estimators=100, random_state=seed, n_jobs=-1),
    ),
    "gradient_boosting": (
        lambda seed: GradientBoostingRegressor(random_state=seed),
        lambda seed: GradientBoostingClassifier(random_state=seed),
    ),
    "linear": (
        lambda seed: LinearRegression(),
        lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    ),
}

_SIMPLE = (str, int, float, bool, type(None))


def make_pipeline(estimator: str, task: Task, seed: int, params: Mapping[str, Any] | None = None) -> Pipeline:
    """``StandardScaler`` + the named estimator; ``params`` override the estimator's defaults."""
    if estimator not in _ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    regressor, classifier = _ESTIMATORS[estimator]
    model = (regressor if task == "regression" else classifier)(seed)
    if params:
        unknown = sorted(set(params) - set(model.get_params(deep=False)))
        if unknown:
            raise ValueError(f"{type(model).__name__} has no parameter(s) {', '.join(unknown)}")
        model.set_params(**params)
    return Pipeline([("scaler", StandardScaler()), ("model", model)])


def final_estimator(pipeline: Pipeline) -> BaseEstimator:
    return pipeline.steps[-1][1]


def simple_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's own parameters that JSON can hold as they are (numbers, strings, booleans, None)."""
    params = sorted(estimator.get_params(deep=False).items())
    return {k: v for k, v in params
            if isinstance(v, _SIMPLE) and not (isinstance(v, float) and not math.isfinite(v))}
