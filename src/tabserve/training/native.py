"""Native LightGBM and XGBoost Boosters as scikit-learn-like models: ``predict`` (and ``predict_proba``).

A Booster loaded from its own file knows its trees and objective but not scikit-learn's API nor its
class labels. ``NativeRegressor`` and ``NativeClassifier`` add both, so that the parity check scores it
like any fitted model, while the export goes to the Booster's own converter (``convert.lightgbm``,
``convert.xgboost``), which reads ``booster_`` (LightGBM), ``get_booster()`` (XGBoost) and ``classes_`` from
the wrapper.

Labels follow the scikit-learn wrappers: LightGBM the argmax of the probabilities; XGBoost binary
``p > 0.5``, multiclass the argmax. Probabilities are those the Booster's ``predict`` returns (float32
for XGBoost, as ``XGBClassifier``), a binary model's as ``[1 - p, p]``.

Native categorical features (``categorical_features``): a model fitted on pandas ``category`` columns
takes text there. ``categories`` holds each such column's categories in the model's code order; rows come
in as text (an empty string or None: missing) and become the DataFrame the model was fitted on, each
column a ``category`` with those categories. A LightGBM or XGBoost scikit-learn model gets the same
(``with_categories``); HistGradientBoosting reads text columns itself.

CatBoost (a ``.cbm`` file, or a pickled CatBoost model) is wrapped the same way, as CatBoost's own
``CatBoostRegressor``/``CatBoostClassifier`` (``convert.catboost.as_estimator``): its ``predict`` and
``predict_proba``, labels flat (CatBoost answers ``[N, 1]`` for several classes), its own class names.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from tabserve.core.manifest import Task
from tabserve.training.convert import registry as convert_registry
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import lookup, register
from tabserve.training.estimators import lightgbm_name

Library = Literal["lightgbm", "xgboost", "catboost"]
LIGHTGBM_CLASSIFIERS = ("binary", "multiclass", "multiclassova")
XGBOOST_CLASSIFIERS = ("binary:", "multi:")  # objective prefixes


@dataclass(frozen=True, slots=True)
class Objective:
    """What a Booster's objective says about the model: its task and number of classes (0 for regression)."""

    name: str
    task: Task
    n_classes: int
    classes: tuple[Any, ...] | None = None  # the labels, where the model names them (CatBoost)


@dataclass(frozen=True, eq=False)
class NativeRegressor:
    booster: Any  # lightgbm.Booster or xgboost.Booster (or their scikit-learn model: ``with_categories``)
    library: Library
    # native categorical feature -> its categories in code order; rows then come as a DataFrame of text
    categories: Mapping[str, Sequence[Any]] | None = field(default=None, kw_only=True)
    columns: tuple[str, ...] | None = field(default=None, kw_only=True)  # the rows' column names, in order

    @property
    def booster_(self) -> Any:  # what the LightGBM converter reads
        return self.booster

    def get_booster(self) -> Any:  # what the XGBoost converter reads
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scores(X)

    def scores(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """The Booster's own ``predict``: values, a binary model's probability, or [N, K] probabilities."""
        if self.library == "catboost":  # a regressor's values; a classifier's [N, K] probabilities
            X = np.asarray(X, dtype=np.float64)
            return np.asarray(self.booster.predict_proba(X) if hasattr(self, "classes_") else self.booster.predict(X))
        if self.categories:
            rows = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=self.columns)
            frame = as_categories(rows, self.categories)
            if self.library == "lightgbm":
                return np.asarray(self.booster.predict(frame))
            import xgboost

            return np.asarray(self.booster.predict(xgboost.DMatrix(frame, enable_categorical=True),
                                                   validate_features=False))
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
        if self.library == "catboost":  # CatBoost's labels come from the raw scores, not the probabilities
            return np.asarray(self.booster.predict(np.asarray(X, dtype=np.float64))).reshape(-1)
        p = self.scores(X)
        if p.ndim == 2:
            index = np.argmax(p, axis=1)
        elif self.library == "xgboost":
            index = p > 0.5
        else:
            index = np.argmax(np.stack([1 - p, p], axis=1), axis=1)
        return self.classes_[np.asarray(index, dtype=np.int64)]


@dataclass(frozen=True, eq=False)
class CategoricalRegressor(NativeRegressor):
    """A LightGBM/XGBoost scikit-learn regressor fitted on ``category`` columns, fed text rows: its own
    ``predict`` on the DataFrame it was fitted on."""

    @property
    def feature_names_in_(self) -> np.ndarray:  # rows come as a DataFrame with these columns
        return np.array(self.columns if self.columns is not None else self.booster.feature_names_in_, dtype=object)

    @property
    def booster_(self) -> Any:  # the library's own Booster, for whoever reads one (explanations)
        return getattr(self.booster, "booster_", self.booster)

    def get_booster(self) -> Any:
        return self.booster.get_booster() if hasattr(self.booster, "get_booster") else self.booster

    def predict(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        assert self.categories is not None
        return np.asarray(self.booster.predict(as_categories(X, self.categories)))


@dataclass(frozen=True, eq=False)
class CategoricalClassifier(CategoricalRegressor):
    @property
    def classes_(self) -> np.ndarray:
        return self.booster.classes_

    def predict_proba(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        assert self.categories is not None
        return np.asarray(self.booster.predict_proba(as_categories(X, self.categories)))


def as_categories(X: np.ndarray | pd.DataFrame, categories: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Rows as the model was fitted on them: each categorical column a pandas ``category`` with the model's
    categories in its code order (None, NaN or an empty string: missing; a value outside them: missing
    too, as pandas' ``set_categories`` makes it), the others float64."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
    out = {}
    for name in frame.columns:
        column = frame[name]
        if name in categories and all(isinstance(c, str) for c in categories[name]):
            text = column.astype(object).where(column.notna(), None)
            values = [None if v is None or v == "" else str(v) for v in text.tolist()]
            out[name] = pd.Categorical(values, categories=list(categories[name]))
        elif name in categories:  # categories that are numbers: the number itself (NaN missing)
            out[name] = pd.Categorical(column.to_numpy(dtype=np.float64), categories=list(categories[name]))
        else:
            out[name] = column.to_numpy(dtype=np.float64)
    return pd.DataFrame(out, columns=frame.columns, index=frame.index)


Unknown = Literal["error", "ignore"]


def categorical_features(model: Any, names: Sequence[str]) -> dict[str, tuple[list[str], Unknown]]:
    """The model's native categorical features that take text: their categories in code order, and what
    the model does with a category it did not see: 'ignore' (HistGradientBoosting and LightGBM read it
    as missing) or 'error' (XGBoost refuses it). Numbers-only categorical features are not listed."""
    final = model.booster if isinstance(model, NativeRegressor) else model
    columns: dict[int, Any] = {}
    unknown: Unknown = "ignore"
    module = convert_registry.library(final)
    if module == "sklearn" and getattr(final, "is_categorical_", None) is not None:
        from tabserve.training.convert.sklearn_trees import hist_categorical

        columns = hist_categorical(final)
    elif module == "lightgbm":
        from tabserve.training.convert.lightgbm import lightgbm_categorical

        columns = lightgbm_categorical(final)
    elif module == "xgboost":
        from tabserve.training.convert.xgboost import xgboost_categorical

        columns, unknown = xgboost_categorical(final), "error"
    found = {}
    for i, column in columns.items():
        cats = [c for c in column.categories or () if not (isinstance(c, float) and np.isnan(c))]
        if cats and i < len(names) and all(isinstance(c, str) for c in cats):
            found[names[i]] = ([str(c) for c in cats], unknown)
    return found


def require_text_categories(model: Any, names: Sequence[str], text: Collection[str]) -> None:
    """``ExportError`` where text reaches a native categorical column of an XGBoost model that holds no
    categories (saved by XGBoost < 3.1): its codes are positions in a DataFrame's ``category`` dtype that the
    model does not record, so no text can be mapped to them (numbers, the codes, still can)."""
    final = model.booster if isinstance(model, NativeRegressor) else model
    if convert_registry.library(final) != "xgboost":
        return
    from tabserve.training.convert.xgboost import (
        xgboost_categorical,
        xgboost_stores_categories,
        xgboost_without_categories,
    )

    if xgboost_stores_categories(final):
        return
    columns = xgboost_categorical(final)
    refused = [n for i, n in enumerate(names) if n in text and i in columns]
    if refused:
        raise xgboost_without_categories(", ".join(repr(n) for n in refused))


def numeric_categories(model: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """LightGBM/XGBoost features fitted as a ``category`` of numbers: their categories (a row gives the
    number itself, which the model's DataFrame holds as that category)."""
    final = model.booster if isinstance(model, NativeRegressor) else model
    module = convert_registry.library(final)
    if module not in ("lightgbm", "xgboost"):
        return {}
    from tabserve.training.convert.lightgbm import lightgbm_categorical
    from tabserve.training.convert.xgboost import xgboost_categorical

    columns = lightgbm_categorical(final) if module == "lightgbm" else xgboost_categorical(final)
    return {names[i]: list(column.categories or ()) for i, column in columns.items()
            if column.numbers == "exact" and i < len(names)}


def with_categories(model: Any, categories: Mapping[str, Sequence[Any]], columns: Sequence[str]) -> Any:
    """``model`` taking text in its native categorical features: a LightGBM/XGBoost scikit-learn model or
    a ``NativeRegressor`` gets the categories; HistGradientBoosting (which reads text itself) and a model
    without such features are returned as they are."""
    if not categories:
        return model
    if isinstance(model, NativeRegressor):
        return replace(model, categories=dict(categories), columns=tuple(columns))
    library = type(model).__module__.partition(".")[0]
    if library not in ("lightgbm", "xgboost"):
        return model
    cls = CategoricalClassifier if hasattr(model, "predict_proba") else CategoricalRegressor
    return cls(model, library, categories=dict(categories), columns=tuple(columns))  # type: ignore[arg-type]


def objective(booster: Any, library: Library) -> Objective:
    if library == "catboost":  # ExportError for what cannot be exported, before anything is written
        from tabserve.training.convert import catboost

        name = catboost.check_supported(booster)
        if name in catboost.CLASSIFIERS:
            labels = tuple(catboost.classes(booster))
            return Objective(name, "classification", len(labels), labels)
        return Objective(name, "regression", 0)
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
    elif library == "catboost":
        names = [str(n) for n in booster.feature_names_ or []]
        generic = [str(i) for i in range(len(names))]
    else:
        names = [str(n) for n in booster.feature_names or []]
        generic = [f"f{i}" for i in range(len(names))]
    return None if not names or names == generic else names


def spelled(library: Library) -> Callable[[str], str] | None:
    """How the library changes a column's name into a feature name: LightGBM writes spaces as '_'."""
    return lightgbm_name if library == "lightgbm" else None


def feature_count(booster: Any, library: Library) -> int:
    if library == "catboost":  # not n_features_in_: a loaded or unpickled CatBoost model says 0 there
        return len(booster.feature_names_ or [])
    return int(booster.num_feature() if library == "lightgbm" else booster.num_features())


def wrap(booster: Any, library: Library, task: Task, classes: list[Any] | None) -> NativeRegressor:
    if library == "catboost":
        from tabserve.training.convert.catboost import as_estimator

        booster = as_estimator(booster)
    if task == "regression":
        return NativeRegressor(booster, library)
    labels = np.array(classes, dtype=object if any(isinstance(c, str) for c in classes or []) else None)
    return NativeClassifier(booster, library, labels)


def _source(model: NativeRegressor) -> Any:
    """What the library's converter reads: a scikit-learn model itself, a Booster through its wrapper."""
    return model.booster if hasattr(model.booster, "get_params") else model


def _convert(graph: Graph, model: NativeRegressor, x: Tensor | Table) -> Any:
    return lookup(model.booster).convert(graph, _source(model), x)


def _thresholds(model: NativeRegressor) -> dict[int, Any]:
    thresholds = lookup(model.booster).thresholds
    return thresholds(_source(model)) if thresholds is not None else {}


register(NativeRegressor, thresholds=_thresholds, takes_table=True)(_convert)
