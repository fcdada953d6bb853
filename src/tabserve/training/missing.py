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
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    ExtraTreeClassifier,
    ExtraTreeRegressor,
)
from sklearn.utils import get_tags

from tabserve.core.manifest import Feature
from tabserve.errors import DataError, ExportError
from tabserve.training.convert.columns import selections
from tabserve.training.native import NativeRegressor
from tabserve.training.rows import name_list

State = Literal["nan", "filled", "refused"]  # NaN reaches this point / was imputed / made the model fail
_ROUTING = (HistGradientBoostingRegressor, HistGradientBoostingClassifier, NativeRegressor)
_ROUTING_LIBRARIES = ("lightgbm", "xgboost")
_SKLEARN_TREES = (DecisionTreeRegressor, DecisionTreeClassifier, ExtraTreeRegressor, ExtraTreeClassifier,
                  RandomForestRegressor, RandomForestClassifier, ExtraTreesRegressor, ExtraTreesClassifier)


def accepting_missing(model: Any, features: Sequence[Feature], fitted_with_nan: Collection[str]) -> set[str]:
    """The numeric features whose NaN ``model`` handles; ``fitted_with_nan``: those that held NaN when it
    was fitted (where known), which matters for scikit-learn's trees only."""
    names = [f.name for f in features]
    numeric = [f.name for f in features if f.kind == "numeric"]
    steps, final = _split(model)
    states: dict[str, State] = dict.fromkeys(numeric, "nan")
    for i, step in enumerate(steps):
        if isinstance(step, ColumnTransformer):  # after another step its columns are not the features: refuse
            states = ({n: _through_columns(step, names, n) for n in numeric} if i == 0 else
                      {n: "refused" if s == "nan" else s for n, s in states.items()})
        else:
            states = {n: _after(step, s) for n, s in states.items()}
    routes = _routes_nan(final)
    return {n for n, s in states.items()
            if s == "filled" or (s == "nan" and (routes == "always" or (routes == "seen" and n in fitted_with_nan)))}


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


def _through_columns(ct: ColumnTransformer, names: list[str], name: str) -> State:
    """What becomes of a NaN in column ``name`` in the ColumnTransformer's parts that select it."""
    try:
        parts = [t for _, t, cols in selections(ct, names) if name in cols]
    except ExportError:
        return "refused"  # the export says what is wrong
    if not parts:
        return "filled"  # dropped: its value is never read
    states = {_after(t, "nan") for t in parts}
    return "refused" if "refused" in states else "nan" if "nan" in states else "filled"


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


def _imputes(step: Any) -> bool:
    if isinstance(step, SimpleImputer):
        marker = step.missing_values
        return isinstance(marker, float) and math.isnan(marker)
    return isinstance(step, KNNImputer) or type(step).__name__ == "IterativeImputer"


def _routes_nan(final: Any) -> Literal["always", "seen", "never"]:
    if isinstance(final, _ROUTING) or type(final).__module__.partition(".")[0] in _ROUTING_LIBRARIES:
        return "always"
    if isinstance(final, _SKLEARN_TREES):
        try:
            return "seen" if get_tags(final).input_tags.allow_nan else "never"
        except (AttributeError, TypeError):
            return "never"
    return "never"
