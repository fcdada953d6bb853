"""Native LightGBM and XGBoost Boosters as scikit-learn-like models: ``predict`` (and ``predict_proba``).

A Booster loaded from its own file knows its trees and objective but not scikit-learn's API nor its
class labels. ``NativeRegressor`` and ``NativeClassifier`` add both, so that the parity check scores it
like any fitted model, while the export goes to the Booster's own converter (``convert.boosters``),
which reads ``booster_`` (LightGBM), ``get_booster()`` (XGBoost) and ``classes_`` from the wrapper.

Labels follow the scikit-learn wrappers: LightGBM the argmax of the probabilities; XGBoost binary
``p > 0.5``, multiclass the argmax. Probabilities are those the Booster's ``predict`` returns (float32
for XGBoost, as ``XGBClassifier``), a binary model's as ``[1 - p, p]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tabserve.core.manifest import Task
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.registry import lookup, register

Library = Literal["lightgbm", "xgboost"]
LIGHTGBM_CLASSIFIERS = ("binary", "multiclass", "multiclassova")
XGBOOST_CLASSIFIERS = ("binary:", "multi:")  # objective prefixes


@dataclass(frozen=True, slots=True)
class Objective:
    """What a Booster's objective says about the model: its task and number of classes (0 for regression)."""

    name: str
    task: Task
    n_classes: int


@dataclass(frozen=True, eq=False)
class NativeRegressor:
    booster: Any  # lightgbm.Booster or xgboost.Booster
    library: Library

    @property
    def booster_(self) -> Any:  # what the LightGBM converter reads
        return self.booster

    def get_booster(self) -> Any:  # what the XGBoost converter reads
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scores(X)

    def scores(self, X: np.ndarray) -> np.ndarray:
        """The Booster's own ``predict``: values, a binary model's probability, or [N, K] probabilities."""
        X = np.asarray(X, dtype=np.float64)
        if self.library == "lightgbm":
            return np.asarray(self.booster.predict(X))
        import xgboost

        # validate_features=False: the rows follow the manifest's order, which the importer matched to
        # the Booster's feature names; a DMatrix from an array has none to compare.
        return np.asarray(self.booster.predict(xgboost.DMatrix(X), validate_features=False))


@dataclass(frozen=True, eq=False)
class NativeClassifier(NativeRegressor):
    classes_: np.ndarray  # the labels, in the order of the probabilities' columns

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = self.scores(X)
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p  # 1 - p stays float32 for XGBoost

    def predict(self, X: np.ndarray) -> np.ndarray:
        p = self.scores(X)
        if p.ndim == 2:
            index = np.argmax(p, axis=1)
        elif self.library == "xgboost":
            index = p > 0.5
        else:
            index = np.argmax(np.stack([1 - p, p], axis=1), axis=1)
        return self.classes_[np.asarray(index, dtype=np.int64)]


def objective(booster: Any, library: Library) -> Objective:
    if library == "lightgbm":
        dump = booster.dump_model(num_iteration=1)  # the header and one iteration's trees, not all
        name = str(dump.get("objective", "")).split(" ")[0]
        k = int(dump.get("num_class", 1))
        if name in LIGHTGBM_CLASSIFIERS:
            return Objective(name, "classification", max(k, 2))
        return Objective(name, "regression", 0)
    import json

    learner = json.loads(booster.save_config())["learner"]
    name = learner["objective"]["name"]
    k = int(learner["learner_model_param"].get("num_class", "0"))
    if name.startswith(XGBOOST_CLASSIFIERS):
        return Objective(name, "classification", max(k, 2))
    return Objective(name, "regression", 0)


def feature_names(booster: Any, library: Library) -> list[str] | None:
    """The Booster's feature names, or None when they are generic (``Column_0``.. or ``f0``..: it was
    trained on an array)."""
    if library == "lightgbm":
        names = [str(n) for n in booster.feature_name()]
        generic = [f"Column_{i}" for i in range(len(names))]
    else:
        names = [str(n) for n in booster.feature_names or []]
        generic = [f"f{i}" for i in range(len(names))]
    return None if not names or names == generic else names


def spelled(library: Library) -> Callable[[str], str] | None:
    """How the library changes a column's name into a feature name: LightGBM writes spaces as '_'."""
    return (lambda name: name.replace(" ", "_")) if library == "lightgbm" else None


def feature_count(booster: Any, library: Library) -> int:
    return int(booster.num_feature() if library == "lightgbm" else booster.num_features())


def wrap(booster: Any, library: Library, task: Task, classes: list[Any] | None) -> NativeRegressor:
    if task == "regression":
        return NativeRegressor(booster, library)
    labels = np.array(classes, dtype=object if any(isinstance(c, str) for c in classes or []) else None)
    return NativeClassifier(booster, library, labels)


def _convert(graph: Graph, model: NativeRegressor, x: Tensor) -> Any:
    return lookup(model.booster).convert(graph, model, x)


def _thresholds(model: NativeRegressor) -> dict[int, Any]:
    thresholds = lookup(model.booster).thresholds
    return thresholds(model) if thresholds is not None else {}


register(NativeRegressor, thresholds=_thresholds)(_convert)
