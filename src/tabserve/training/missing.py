"""Which numeric features accept a missing value (the manifest's ``allow_missing``), read from the model.

A feature accepts NaN when the model handles it on that column, as scikit-learn's ``predict`` does:
- an imputer fills it first (SimpleImputer with NaN as its marker, IterativeImputer, KNNImputer), alone, in a
  Pipeline, or in the ColumnTransformer part that selects the column, with only NaN-keeping steps before it
  (scalers, 'passthrough');
- or NaN reaches a final estimator that routes it: HistGradientBoosting, LightGBM and XGBoost always (each
  split has a learned or default branch for it);
- scikit-learn's own trees and forests route NaN too, but a NaN in a feature they never saw with one goes to
  the larger child, a rule no data chose: they accept it on the features that held NaN when fitted (seen in
  the training data, or in an imported model's sample, since scikit-learn does not record it).
Any other path (a linear model, an SVM, a net, GradientBoosting, a one-hot encoder on a number) refuses NaN,
and so does the server, with a 422 naming the feature.

A text feature accepts a missing value (NaN, as pandas reads an empty field) where its first step takes it
as scikit-learn's ``transform`` does: a SimpleImputer with NaN as its marker; a OneHotEncoder, OrdinalEncoder
or TargetEncoder fitted with a missing category. An encoder without one that encodes an unknown value
(``handle_unknown`` other than 'error'; TargetEncoder always) takes a missing value as unknown: accepted on the
features that held missing values when fitted (the rows show that the model is used so), else refused, so
that a client's forgotten value is a 422 rather than an answer. An OrdinalEncoder that writes NaN for a
missing category (``encoded_missing_value``) hands NaN on, to the steps after it as above.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any, Literal

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, TargetEncoder
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)
from sklearn.utils import get_tags

from tabserve.core.manifest import Feature
from tabserve.errors import DataError, ExportError
from tabserve.training.convert import registry as convert_registry
from tabserve.training.convert.columns import selections
from tabserve.training.convert.encoders import is_missing
from tabserve.training.native import NativeRegressor, require_text_categories
from tabserve.training.rows import name_list

# NaN reaches this point / was imputed / made the model fail / (text) was encoded as an unknown category
State = Literal["nan", "filled", "refused", "unknown"]
_ROUTING = (HistGradientBoostingRegressor, HistGradientBoostingClassifier, NativeRegressor)
_ROUTING_LIBRARIES = ("lightgbm", "xgboost")
_SKLEARN_TREES = (DecisionTreeRegressor, DecisionTreeClassifier, ExtraTreeRegressor, ExtraTreeClassifier,
                  RandomForestRegressor, RandomForestClassifier, ExtraTreesRegressor, ExtraTreesClassifier)


def accepting_missing(model: Any, features: Sequence[Feature], fitted_with_nan: Collection[str]) -> set[str]:
    """The features whose missing value ``model`` handles; ``fitted_with_nan``: those that held NaN when it
    was fitted (where known), which matters for scikit-learn's trees only."""
    names = [f.name for f in features]
    text = {f.name for f in features if f.kind == "categorical"}
    steps, final = _split(model)
    states: dict[str, State] = dict.fromkeys(names, "nan")
    for i, step in enumerate(steps):
        if isinstance(step, ColumnTransformer):  # after another step its columns are not the features: refuse
            states = ({n: _through_columns(step, names, n, n in text) for n in names} if i == 0 else
                      {n: "refused" if s == "nan" else s for n, s in states.items()})
        elif i == 0:
            states = {n: _after_text(step, s, names.index(n)) if n in text else _after(step, s)
                      for n, s in states.items()}
        else:
            states = {n: _after(step, s) for n, s in states.items()}
    if not steps:  # text straight into the estimator: only a native model takes it (the importer says so)
        require_text_categories(final, names, text)  # not an XGBoost model without its categories (< 3.1)
        states = {n: "refused" if n in text else s for n, s in states.items()}
    routes = _routes_nan(final)
    return {n for n, s in states.items()
            if s == "filled" or (s == "unknown" and n in fitted_with_nan)
            or (s == "nan" and (routes == "always" or (routes == "seen" and n in fitted_with_nan)))}


def decide_missing(model: Any, features: Sequence[Feature], source: str) -> list[Feature]:
    """``features`` with ``allow_missing`` from the model. A feature's ``allow_missing`` on entry says that the
    rows (the sample, the training data) hold NaN in it; where the model refuses NaN there, ``DataError``."""
    seen = {f.name for f in features if f.allow_missing}
    accepted = accepting_missing(model, features, seen)
    refused = [n for n in seen if n not in accepted]
    if refused:
        raise DataError(
            f"feature column(s) {name_list(refused)} in {source} hold missing values, but the model does not take "
            f"them there ({describe(model)}): fill or drop those rows, or use a model with an imputer on those "
            "columns (e.g. SimpleImputer) or one that routes missing values (e.g. HistGradientBoosting)",
            path=source, column=refused[0])
    return [f.model_copy(update={"allow_missing": f.name in accepted}) for f in features]


def describe(model: Any) -> str:
    steps, final = _split(model)
    return " + ".join(type(s).__name__ for s in [*steps, final])


def _split(model: Any) -> tuple[list[Any], Any]:
    """(the steps before the final estimator, nested pipelines flattened, the final estimator)."""
    if not isinstance(model, Pipeline):
        return [], model
    steps: list[Any] = []
    for _, step in model.steps:
        if isinstance(step, Pipeline):
            inner, last = _split(step)
            steps += [*inner, last]
        elif not _skipped(step):
            steps.append(step)
    return steps[:-1], steps[-1]


def _skipped(step: Any) -> bool:
    return step is None or (isinstance(step, str) and step == "passthrough") or (
        isinstance(step, FunctionTransformer) and step.func is None)


def _through_columns(ct: ColumnTransformer, names: list[str], name: str, text: bool = False) -> State:
    """What becomes of a NaN in column ``name`` in the ColumnTransformer's parts that select it."""
    try:
        parts = [(t, cols.index(name)) for _, t, cols in selections(ct, names) if name in cols]
    except ExportError:
        return "refused"  # the export says what is wrong
    if not parts:
        return "filled"  # dropped: its value is never read
    states = {_after_text(t, "nan", j) if text else _after(t, "nan") for t, j in parts}
    for state in ("refused", "unknown", "nan"):
        if state in states:
            return state  # type: ignore[return-value]
    return "filled"


def _after(step: Any, state: State) -> State:
    if state != "nan" or _skipped(step):
        return state
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            state = _after(inner, state)
        return state
    if _imputes(step):
        return "filled"
    if isinstance(step, FunctionTransformer) and not step.validate:
        return "nan"  # the function gets NaN as it is (a ufunc keeps it); the tag says 'no' for any function
    try:
        keeps = bool(get_tags(step).input_tags.allow_nan)
    except (AttributeError, TypeError):
        keeps = False
    return "nan" if keeps else "refused"


def _after_text(step: Any, state: State, column: int) -> State:
    """What becomes of a missing value in input column ``column`` of ``step``, a step that takes text."""
    if state != "nan" or _skipped(step):
        return state
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            state = _after_text(inner, state, column) if state == "nan" and _takes_text(inner) else \
                _after(inner, state)
        return state
    if isinstance(step, SimpleImputer):
        return "filled" if _imputes(step) else "refused"  # a None or "" marker: scikit-learn refuses NaN
    if not isinstance(step, OneHotEncoder | OrdinalEncoder | TargetEncoder):
        return "refused"
    cats = step.categories_[column] if column < len(step.categories_) else []
    known = any(is_missing(c) for c in cats)
    if isinstance(step, OrdinalEncoder):
        if known:
            return "nan" if _is_nan(step.encoded_missing_value) else "filled"
        if step.handle_unknown == "use_encoded_value":
            return "unknown"
        return "refused"
    if known:
        return "filled"
    takes_unknown = isinstance(step, TargetEncoder) or step.handle_unknown != "error"  # TargetEncoder: its mean
    return "unknown" if takes_unknown else "refused"


def _takes_text(step: Any) -> bool:
    return isinstance(step, SimpleImputer | OneHotEncoder | OrdinalEncoder | TargetEncoder) or _skipped(step)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _imputes(step: Any) -> bool:
    if isinstance(step, SimpleImputer):
        marker = step.missing_values
        return isinstance(marker, float) and math.isnan(marker)
    return isinstance(step, KNNImputer) or type(step).__name__ == "IterativeImputer"


def _routes_nan(final: Any) -> Literal["always", "seen", "never"]:
    if isinstance(final, _ROUTING) or convert_registry.library(final) in _ROUTING_LIBRARIES:
        return "always"
    if isinstance(final, _SKLEARN_TREES):
        try:
            return "seen" if get_tags(final).input_tags.allow_nan else "never"
        except (AttributeError, TypeError):
            return "never"
    return "never"
