"""Adversarial parity rows: inputs placed where an export is most likely to disagree with its model.

A holdout drawn at random rarely lands within one rounding step of a split threshold, yet that is where
a float32 cast or a reordered sum flips a tree's decision. Each row here is a holdout row with one
feature replaced by a probe:

- *thresholds*: for every split threshold ``t`` the final estimator uses (its converter's registered
  ``thresholds`` function, per input column of the estimator), the values ``t``, the doubles next to
  ``t``, ``float32(t)`` and the float32 values next to it; mapped back to the raw feature through the
  transformers before the estimator when they can be inverted: scalers (``x = t * scale_ + mean_``,
  then nudged by ulps until the scaler gives back ``t`` where it can), SimpleImputer and
  'passthrough'/identity columns (as they are; a missing-indicator column probes NaN), OneHotEncoder
  columns (every category of the feature), feature selectors (the selected columns), KBinsDiscretizer
  (its bin edges and the doubles next to them), ColumnTransformer and nested Pipelines (each part in turn).
  A threshold behind any other transformer is not probed;
- *categories*: every category of each categorical feature, an unseen one where the manifest
  accepts it (``handle_unknown='ignore'``), and a missing one (NaN, as pandas reads an empty field; the
  ONNX input gets ``MISSING_CATEGORY``) where it takes one (``allow_missing``);
- *missing*: NaN in each feature that accepts missing values (``allow_missing``).

At most ``limit`` rows are kept, sampled with a fixed seed (a deep forest's threshold probes are first
cut to ``10 * limit``): the same model gets the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    RobustScaler,
    StandardScaler,
)

from tabserve.core.manifest import Feature
from tabserve.errors import ExportError
from tabserve.training.convert.columns import selections
from tabserve.training.convert.discretize import edge_probes
from tabserve.training.convert.encoders import feature_codes, is_missing
from tabserve.training.convert.registry import lookup
from tabserve.training.options import ADVERSARIAL_ROWS

LIMIT = ADVERSARIAL_ROWS
SEED = 0
UNSEEN = "__tabserve_unseen_category__"
_NUDGES = 8
_CAP = 10  # threshold probes mapped back to the features: at most this many times the row limit

# column -> distinct probe values: float64 (NaN last) or category strings (object)
Probes = dict[int, np.ndarray]


@dataclass(frozen=True, slots=True)
class AdversarialRows:
    rows: pd.DataFrame  # the feature columns, as the holdout
    descriptions: list[str]  # one per row: which holdout row, which feature, which value and why
    counts: dict[str, int] = field(default_factory=dict)  # probes per kind, before the rows are sampled

    def __len__(self) -> int:
        return len(self.rows)


def adversarial_rows(model: Any, features: Sequence[Feature], holdout: pd.DataFrame,
                     holdout_ids: Sequence[int], *, limit: int = LIMIT, seed: int = SEED,
                     extremes: bool = False) -> AdversarialRows:
    """Rows of ``holdout`` (feature columns in manifest order) with one feature set to a probe each.

    ``extremes`` adds, per numeric feature, the holdout's min and max and one range beyond each: where an
    approximate (float) graph drifts furthest from its model, so that the error it records is not only the
    error near the data."""
    names = [f.name for f in features]
    thresholds = threshold_probes(model, names, cap=_CAP * limit, seed=seed)
    kinds: list[tuple[int, np.ndarray, str]] = [
        (c, v, "split threshold") for c, v in sorted(thresholds.items()) if features[c].kind == "numeric"]
    for i, f in enumerate(features):
        if f.kind == "categorical":  # the categories cover the one-hot columns' thresholds
            unseen = [UNSEEN] if f.handle_unknown == "ignore" else []
            unseen += [np.nan] if f.allow_missing else []  # an imputer, an encoder or a native split takes it
            values = (np.array([*f.categories, *unseen], dtype=object) if f.categories
                      else thresholds.get(i, np.array([], dtype=object)))
            kinds.append((i, values, "category"))
        elif f.allow_missing:
            kinds.append((i, np.array([np.nan]), "missing value"))
        if extremes and f.kind == "numeric":
            kinds.append((i, _extremes(holdout[f.name].to_numpy(dtype=np.float64)), "range edge"))
    reasons = (("thresholds", "split threshold"), ("categories", "category"), ("missing", "missing value"),
               *((("extremes", "range edge"),) if extremes else ()))
    counts = {kind: sum(len(v) for _, v, why in kinds if why == reason) for kind, reason in reasons}
    sizes = np.array([len(v) for _, v, _ in kinds], dtype=np.int64)
    total = int(sizes.sum())
    chosen = np.arange(total) if total <= limit else \
        np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
    group = np.searchsorted(np.cumsum(sizes), chosen, side="right")
    offset = chosen - np.concatenate([[0], np.cumsum(sizes)[:-1]])[group]
    probes = [(kinds[g][0], kinds[g][1][o], kinds[g][2])
              for g, o in zip(group.tolist(), offset.tolist(), strict=True)]
    return _rows(probes, features, holdout, list(holdout_ids), counts)


def _extremes(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.array([], dtype=np.float64)
    low, high = float(finite.min()), float(finite.max())
    span = high - low
    return np.unique([low - span, low, high, high + span])


def threshold_probes(model: Any, names: Sequence[str], *, cap: int | None = None, seed: int = SEED) -> Probes:
    """Probe values per input column of ``model`` (positions in ``names``) from its final estimator.

    ``cap``: at most this many of the estimator's probe values, sampled, are mapped back (a deep forest
    has millions)."""
    steps = _flatten(model)
    estimator = steps[-1]
    try:
        entry = lookup(estimator)
    except ExportError:  # no exact converter (an --approximate export): no thresholds to probe
        return {}
    if entry.thresholds is None:
        return {}
    probes: Probes = {int(col): _around(ts) for col, ts in entry.thresholds(estimator).items()}
    if cap is not None:
        probes = _sample(probes, cap, seed)
    for step in reversed(steps[:-1]):
        probes = invert(step, probes, names)
        if not probes:
            break
    return {c: v for c, v in probes.items() if len(v)}


def invert(step: Any, probes: Probes, names: Sequence[str]) -> Probes:
    """The input columns and values of ``step`` that give (about) ``probes`` on its output columns."""
    if isinstance(step, Pipeline):
        for inner in reversed(_flatten(step)):
            probes = invert(inner, probes, names)
        return probes
    if isinstance(step, ColumnTransformer):
        return _invert_columns(step, probes, names)
    if (isinstance(step, str) and step == "passthrough"
            or isinstance(step, FunctionTransformer) and step.func is None):
        return probes
    if isinstance(step, StandardScaler | RobustScaler | MaxAbsScaler | MinMaxScaler):
        return {j: _distinct(_unscale(step, j, v)) for j, v in probes.items() if v.dtype != object}
    if isinstance(step, SimpleImputer):
        return _invert_imputer(step, probes)
    if isinstance(step, OneHotEncoder):
        return _invert_one_hot(step, probes)
    if isinstance(step, KBinsDiscretizer):  # the bin edges, whatever the estimator's thresholds on the bins
        return edge_probes(step, [int(c) for c in probes])
    if isinstance(step, SelectorMixin):  # a column gather: the same values on the selected input columns
        kept = step.get_support(indices=True)
        return {int(kept[j]): v for j, v in probes.items()}
    return {}  # not invertible here: those thresholds are not probed


def _sample(probes: Probes, cap: int, seed: int) -> Probes:
    columns = sorted(probes)
    sizes = np.array([len(probes[c]) for c in columns], dtype=np.int64)
    if sizes.sum() <= cap:
        return probes
    chosen = np.sort(np.random.default_rng(seed).choice(int(sizes.sum()), size=cap, replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return {c: probes[c][chosen[(chosen >= starts[k]) & (chosen < starts[k + 1])] - starts[k]]
            for k, c in enumerate(columns)}


def _flatten(model: Any) -> list[Any]:
    if not isinstance(model, Pipeline):
        return [model]
    out: list[Any] = []
    for _, step in model.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        out += _flatten(step)
    return out


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; numbers as float64 (one NaN at most, last), strings as objects."""
    if values.dtype == object:
        return np.array(sorted(set(values.tolist())), dtype=object)
    return np.unique(values.astype(np.float64))


def _merge(probes: Probes, column: int, values: np.ndarray) -> None:
    old = probes.get(column)
    if old is None:
        probes[column] = values
    elif (old.dtype == object) == (values.dtype == object):
        probes[column] = _distinct(np.concatenate([old, values]))


def _around(thresholds: Any) -> np.ndarray:
    """Each threshold, its double neighbours, its float32 rounding and that rounding's float32 neighbours."""
    t = np.unique(np.asarray(thresholds, dtype=np.float64).ravel())
    t = t[np.isfinite(t)]
    t32 = t.astype(np.float32)
    values = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), t32.astype(np.float64),
              np.nextafter(t32, np.float32(-np.inf)).astype(np.float64),
              np.nextafter(t32, np.float32(np.inf)).astype(np.float64)]
    return _distinct(np.concatenate(values))


def _scaling(scaler: Any) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """(offset, factor, multiply): sklearn computes (x - offset) / factor, or x * factor + offset."""
    if isinstance(scaler, StandardScaler):
        return ((scaler.mean_ if scaler.with_mean else None), (scaler.scale_ if scaler.with_std else None),
                False)
    if isinstance(scaler, RobustScaler):
        return (scaler.center_ if scaler.with_centering else None), \
            (scaler.scale_ if scaler.with_scaling else None), False
    if isinstance(scaler, MaxAbsScaler):
        return None, scaler.scale_, False
    return scaler.min_, scaler.scale_, True


def _unscale(scaler: Any, j: int, target: np.ndarray) -> np.ndarray:
    offset, factor, multiply = _scaling(scaler)
    o = 0.0 if offset is None else float(np.asarray(offset)[j])
    f = 1.0 if factor is None else float(np.asarray(factor)[j])

    def forward(x: np.ndarray) -> np.ndarray:
        if multiply:
            return x * f + o
        return ((x - o) if offset is not None else x) / (f if factor is not None else 1.0)

    x = (target - o) / f if multiply else target * f + o
    # The inverse is a few ulps off: of the doubles within _NUDGES ulps, take the one that scales closest
    # to the target (onto it, where one does).
    candidates = [x]
    for direction in (np.inf, -np.inf):
        step = x
        for _ in range(_NUDGES):
            step = np.nextafter(step, direction)
            candidates.append(step)
    tried = np.stack(candidates)
    best = np.argmin(np.abs(forward(tried) - target), axis=0)
    return tried[best, np.arange(len(target))]


def _invert_imputer(imputer: SimpleImputer, probes: Probes) -> Probes:
    stats = np.array([np.nan if is_missing(v) else 0.0 if isinstance(v, str) else v  # strings: a column kept
                      for v in imputer.statistics_], dtype=np.float64)  # the converter refused any other
    keep = np.arange(len(stats)) if imputer.keep_empty_features else np.flatnonzero(~np.isnan(stats))
    indicated = list(imputer.indicator_.features_) if imputer.add_indicator else []
    out: Probes = {}
    for j, values in probes.items():
        if j < len(keep):
            _merge(out, int(keep[j]), values)
        elif j - len(keep) < len(indicated):
            _merge(out, int(indicated[j - len(keep)]), np.array([np.nan]))
    return out


def _invert_one_hot(encoder: OneHotEncoder, probes: Probes) -> Probes:
    codes = feature_codes(encoder)
    starts = np.cumsum([0] + [c.width for c in codes])
    out: Probes = {}
    for j in probes:
        i = int(np.searchsorted(starts, j, side="right") - 1)
        if not 0 <= i < len(codes):
            continue
        cats = [c for c in codes[i].categories.tolist() if not is_missing(c)]  # missing: a category probe
        if all(isinstance(c, str) for c in cats):
            unseen = [UNSEEN] if encoder.handle_unknown != "error" else []
            _merge(out, i, np.array(cats + unseen, dtype=object))
        else:
            _merge(out, i, np.asarray(cats, dtype=np.float64))
    return out


def _invert_columns(ct: ColumnTransformer, probes: Probes, names: Sequence[str]) -> Probes:
    fitted = [str(n) for n in getattr(ct, "feature_names_in_", names)]
    out: Probes = {}
    for name, transformer, selected in selections(ct, fitted):
        block = ct.output_indices_.get(name)
        if block is None:
            continue
        local = {j - block.start: v for j, v in probes.items() if block.start <= j < block.stop}
        if not local:
            continue
        for k, values in invert(transformer, local, selected).items():
            if k < len(selected) and selected[k] in names:
                _merge(out, list(names).index(selected[k]), values)
    return out


def _rows(probes: list[tuple[int, Any, str]], features: Sequence[Feature], holdout: pd.DataFrame,
          holdout_ids: list[int], counts: dict[str, int]) -> AdversarialRows:
    names = [f.name for f in features]
    if len(holdout) == 0:
        raise ExportError("adversarial parity rows need at least one holdout row to start from")
    base = np.arange(len(probes)) % len(holdout)
    rows = holdout[names].iloc[base].reset_index(drop=True)
    columns = {f.name: rows[f.name].to_numpy(dtype=object if f.kind == "categorical" else np.float64,
                                             copy=True) for f in features}
    descriptions = []
    for k, (column, value, why) in enumerate(probes):
        name = names[column]
        columns[name][k] = value
        descriptions.append(f"holdout row {holdout_ids[base[k]]} with {name!r} = {_show(value)} ({why})")
    return AdversarialRows(pd.DataFrame(columns, columns=names), descriptions, counts)


def _show(value: Any) -> str:
    if isinstance(value, float):  # np.float64 too
        return "NaN" if math.isnan(value) else repr(float(value))  # the shortest string that round-trips
    return repr(value)
