"""The pipelines tabserve trains: a StandardScaler (and a OneHotEncoder for text columns) + one estimator, and a
median imputer with missing indicators before the scaler when an estimator that refuses NaN gets some. A missing
text value is a category of its own (its one-hot column), for every estimator. LightGBM and XGBoost (the [boost]
extra) take the numeric columns as they are: they route NaN themselves."""

from __future__ import annotations

import difflib
import importlib.util
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import get_tags
from sklearn.utils._param_validation import InvalidParameterError

from tabserve.core.manifest import Task
from tabserve.errors import OptionError
from tabserve.training.options import AUTO, BOOSTING_LIBRARIES, ESTIMATORS

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
    "hist_gradient_boosting": (
        lambda seed: HistGradientBoostingRegressor(random_state=seed),
        lambda seed: HistGradientBoostingClassifier(random_state=seed),
    ),
    "decision_tree": (
        lambda seed: DecisionTreeRegressor(random_state=seed),
        lambda seed: DecisionTreeClassifier(random_state=seed),
    ),
    "linear": (
        lambda seed: LinearRegression(),
        lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    ),
}



def _lightgbm(task: Task, seed: int) -> BaseEstimator:
    import lightgbm

    cls = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    return cls(random_state=seed, verbose=-1)


def _xgboost(task: Task, seed: int) -> BaseEstimator:
    import xgboost

    if task == "regression":
        return xgboost.XGBRegressor(random_state=seed)
    return _labelled_xgb_classifier()(random_state=seed)


def _labelled_xgb_classifier() -> type:
    """XGBoost's classifiers learn the classes 0..K-1 only; this one takes any labels (text, or numbers that are
    not 0..K-1), as scikit-learn's classifiers do: it learns their sorted positions and answers the labels.
    The exporter reads it as the XGBClassifier it is (its ``classes_`` are the labels)."""
    global _LabelledXGBClassifier
    if _LabelledXGBClassifier is None:
        import xgboost

        class LabelledXGBClassifier(xgboost.XGBClassifier):
            def fit(self, X: Any, y: Any, **kwargs: Any) -> LabelledXGBClassifier:
                labels = np.unique(np.asarray(y))
                self._labels = None  # XGBoost's fit checks the classes it sees against classes_: 0..K-1
                super().fit(X, np.searchsorted(labels, np.asarray(y)), **kwargs)
                self._labels = labels
                return self

            @property
            def classes_(self) -> np.ndarray:
                labels = getattr(self, "_labels", None)
                return np.arange(self.n_classes_) if labels is None else labels

            def predict(self, X: Any, **kwargs: Any) -> np.ndarray:
                return self.classes_[np.asarray(super().predict(X, **kwargs), dtype=np.intp)]

        LabelledXGBClassifier.__module__ = __name__
        _LabelledXGBClassifier = LabelledXGBClassifier
    return _LabelledXGBClassifier


_LabelledXGBClassifier: type | None = None  # built on first use: xgboost is an optional dependency
_BOOSTING: dict[str, Callable[[Task, int], BaseEstimator]] = {"lightgbm": _lightgbm, "xgboost": _xgboost}
_SIMPLE = (str, int, float, bool, type(None))


def installed(estimator: str) -> bool:
    """Is the estimator's library importable (LightGBM and XGBoost come with the [boost] extra)?"""
    return estimator not in BOOSTING_LIBRARIES or importlib.util.find_spec(estimator) is not None


def make_estimator(estimator: str, task: Task, seed: int,
                   params: Mapping[str, Any] | None = None) -> BaseEstimator:
    """The named estimator; ``params`` override its defaults (``OptionError`` naming close names on a typo)."""
    if estimator in _BOOSTING:
        if not installed(estimator):
            raise OptionError(f"--estimator {estimator} needs the {estimator} library, which is not installed: "
                              "pip install 'tabserve[boost]' (LightGBM and XGBoost)")
        model = _BOOSTING[estimator](task, seed)
    elif estimator in _ESTIMATORS:
        regressor, classifier = _ESTIMATORS[estimator]
        model = (regressor if task == "regression" else classifier)(seed)
    else:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if params:
        check_params(model, estimator, params)
        model.set_params(**params)
        try:
            if hasattr(model, "_parameter_constraints"):  # scikit-learn's own value checks
                model._validate_params()
        except InvalidParameterError as exc:
            raise OptionError(f"--param for {estimator}: {exc}") from None
    return model


def check_params(model: BaseEstimator, estimator: str, params: Mapping[str, Any]) -> None:
    """Every key of ``params`` is one of the estimator's parameters; a typo is refused with the close names."""
    known = sorted(model.get_params(deep=False))
    unknown = [k for k in params if k not in known]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    raise OptionError(f"--param: {estimator} ({type(model).__name__}) has no parameter {', '.join(hints)}; "
                      f"its parameters are: {', '.join(known)}")


def make_pipeline(estimator: str, task: Task, seed: int, params: Mapping[str, Any] | None = None, *,
                  categorical: Mapping[str, Sequence[str]] | None = None, numeric: Sequence[str] = (),
                  unknown_category: str = "error", impute: bool = False,
                  missing_text: Collection[str] = ()) -> Pipeline:
    """``StandardScaler`` + the named estimator; ``params`` override the estimator's defaults.

    With ``categorical`` features (name -> its categories), the first step is a ColumnTransformer: a
    OneHotEncoder (``handle_unknown=unknown_category``) on those columns, a StandardScaler on the
    ``numeric`` ones; such a pipeline is fitted on a DataFrame (``fit_input``). ``impute``: the numeric
    columns first go through ``MISSING_IMPUTER`` (see ``needs_imputer``). ``missing_text``: the categorical
    features whose missing value (NaN) is a category of its own (``MISSING_TEXT_CATEGORY``).
    """
    model = make_estimator(estimator, task, seed, params)
    if estimator in BOOSTING_LIBRARIES:  # trees split the numbers as they are, NaN included
        if not categorical:
            return Pipeline([("model", model)])
        numeric_steps: list[tuple[str, Any]] = [("numbers", "passthrough")]
    else:
        numeric_steps = [("scaler", StandardScaler())]
    if impute:
        numeric_steps.insert(0, ("imputer", missing_imputer()))
    if not categorical:
        return Pipeline([*numeric_steps, ("model", model)])
    names = list(categorical)
    # scikit-learn wants NaN last among given categories; no imputed value can collide with a real one.
    categories = [[*categorical[n], *([np.nan] if n in missing_text else [])] for n in names]
    encoder = OneHotEncoder(categories=categories, handle_unknown=unknown_category, sparse_output=False)
    parts: list[tuple[str, Any, list[str]]] = [("categorical", encoder, names)]
    if numeric:
        block = numeric_steps[0][1] if len(numeric_steps) == 1 else Pipeline(numeric_steps)
        parts.append(("numeric", block, list(numeric)))
    return Pipeline([("columns", ColumnTransformer(parts)), ("model", model)])


MISSING_IMPUTER = "median imputation + missing indicators (SimpleImputer) on the numeric features"
MISSING_TEXT_CATEGORY = "a missing text value is a category of its own (OneHotEncoder with NaN among its categories)"


def missing_imputer() -> SimpleImputer:
    """A missing value becomes the column's training median, and a 0/1 indicator column per feature that
    had missing values in training says it was missing (so the model may learn that it matters)."""
    return SimpleImputer(strategy="median", add_indicator=True)


def needs_imputer(estimator: str, task: Task) -> bool:
    """Does the named estimator refuse NaN (scikit-learn's ``allow_nan`` tag), so that training data with
    missing numbers gets ``missing_imputer`` first? (gradient_boosting and linear)"""
    return not get_tags(make_estimator(estimator, task, 0)).input_tags.allow_nan


def handles_missing(estimator: str, task: Task) -> bool:
    """Can the named estimator be trained on data with missing numbers? All can: natively, or after the
    imputer that ``make_pipeline(impute=True)`` adds."""
    return estimator in ESTIMATORS or estimator == AUTO


def fit_input(X: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """What a pipeline from ``make_pipeline`` is fitted on: the DataFrame when some column is text (the
    ColumnTransformer selects columns by name), else a float64 array."""
    if all(pd.api.types.is_numeric_dtype(X[c]) for c in X.columns):
        return X.to_numpy(dtype=np.float64)
    return X


def model_input(model: Any, X: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """Rows as ``model`` was fitted on them: a DataFrame if it knows its feature names, else an array.
    LightGBM 4.6 also names the columns of a model fitted on an array (``Column_0``, ...): those are
    positions, not names."""
    found = getattr(model, "feature_names_in_", None)
    if found is None:
        return fit_input(X)
    names = [str(n) for n in found]
    if names == [f"Column_{i}" for i in range(len(names))] and not set(names) <= set(X.columns):
        return fit_input(X)
    if not set(names) <= set(X.columns):  # a LightGBM model fitted on "body mass (g)" knows "body_mass_(g)"
        respelled = {lightgbm_name(str(c)): c for c in X.columns}
        if set(names) <= set(respelled):
            return X[[respelled[n] for n in names]].set_axis(names, axis=1)
    return X[names]


def lightgbm_name(column: str) -> str:
    """The feature name LightGBM gives a DataFrame column: a space becomes '_' (other characters it keeps,
    or refuses at fit time)."""
    return column.replace(" ", "_")


def final_estimator(pipeline: Pipeline) -> BaseEstimator:
    return pipeline.steps[-1][1]


def simple_params(estimator: BaseEstimator) -> dict[str, Any]:
    """The estimator's own parameters that JSON can hold as they are (numbers, strings, booleans, None)."""
    params = sorted(estimator.get_params(deep=False).items())
    return {k: v for k, v in params
            if isinstance(v, _SIMPLE) and not (isinstance(v, float) and not math.isfinite(v))}
