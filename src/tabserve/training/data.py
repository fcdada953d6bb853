"""Training data: pick the features of a table (read by ``tables.read_table``), check them, split them, or say
precisely what is wrong."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tabserve.core.manifest import Feature, Task
from tabserve.errors import DataError
from tabserve.training.rows import name_list, row_list
from tabserve.training.tables import MIN_ROWS, Table
from tabserve.training.target import Target, prepare_target

MAX_CATEGORIES = 1000
UnknownPolicy = Literal["error", "ignore"]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Checked training data: numeric features finite (NaN only where the model takes it), categorical
    features strings, every class present often enough to split."""

    X: pd.DataFrame  # the feature columns in model order: numeric float64, categorical str objects
    target: Target
    specs: list[Feature]  # one per feature: kind, dtype, missing values, categories (no statistics yet)
    source: str
    fingerprint: str
    columns: int
    source_rows: np.ndarray | None = None  # each row's number in the source; None: 0..rows-1
    dropped: np.ndarray | None = None  # the source's rows left out: their target is missing

    @property
    def rows(self) -> int:
        return len(self.X)

    @property
    def features(self) -> list[str]:
        return [f.name for f in self.specs]

    def names(self, kind: str) -> list[str]:
        return [f.name for f in self.specs if f.kind == kind]


@dataclass(frozen=True, slots=True)
class Split:
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_holdout: pd.DataFrame
    y_holdout: np.ndarray
    holdout_ids: np.ndarray


def prepare(table: Table, target: str, features: Sequence[str] | None = None, task: Task | None = None, *,
            missing: bool = False, unknown_category: UnknownPolicy = "error") -> Dataset:
    """Choose the columns, check every value, and decide the task (``task`` overrides the guess).

    Text (and pandas category) columns become categorical features, numbers (and booleans) numeric ones.
    ``missing``: the model handles missing numeric values, so NaN is kept (``allow_missing`` on the
    features that have some) instead of refused. ``unknown_category``: what the model does with a
    category it never saw, recorded on each categorical feature. Rows whose target is missing are left out
    (``Dataset.dropped``): there is nothing to learn from them.
    """
    frame, source = table.frame, table.name
    if target not in frame.columns:
        raise DataError(f"{source} has no column {target!r} (the --target); "
                        f"columns are: {name_list(frame.columns)}", path=source, column=target)
    names = _feature_names(frame, target, features, source)
    labelled = frame[target].notna().to_numpy()
    kept, dropped = np.flatnonzero(labelled), np.flatnonzero(~labelled)
    if len(kept) < MIN_ROWS:
        also = f" with a target value ({len(dropped)} more have none)" if len(dropped) else ""
        raise DataError(f"{source} has {len(kept)} data rows{also}; at least {MIN_ROWS} are needed to train "
                        "and keep a holdout for metrics and parity", path=source, limit=MIN_ROWS)
    # Values are checked on every row, so that messages name the rows of the file.
    columns, specs = {}, []
    for name in names:
        column = frame[name]
        if _is_numeric(column, name, source):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            _check_numbers(values, name, source, missing)
            values = values[kept]
            specs.append(Feature(name=name, dtype=str(column.dtype), allow_missing=bool(np.isnan(values).any())))
        else:
            values = _categories(column, name, source)[kept]
            seen = [v for v in values.tolist() if isinstance(v, str)]  # NaN: a missing value
            specs.append(Feature(name=name, dtype="str", kind="categorical", categories=sorted(set(seen)),
                                 handle_unknown=unknown_category, allow_missing=len(seen) < len(values)))
        columns[name] = values
    return Dataset(
        X=pd.DataFrame(columns, columns=names),
        target=prepare_target(_labelled(frame[target], kept), task, source),
        specs=specs,
        source=source,
        fingerprint=table.fingerprint,
        columns=frame.shape[1],
        source_rows=kept,
        dropped=dropped,
    )


def _labelled(column: pd.Series, kept: np.ndarray) -> pd.Series:
    """The target's values on the rows that have one. pandas reads a column of whole numbers with an empty
    cell as floats: without those cells, they are whole numbers again (class labels, maybe)."""
    if len(kept) == len(column):
        return column
    values = column.iloc[kept].reset_index(drop=True)
    if pd.api.types.is_float_dtype(values) and bool((values == np.round(values)).all()):
        return values.astype(np.int64)
    return values


def _feature_names(frame: pd.DataFrame, target: str, features: Sequence[str] | None,
                   source: str) -> list[str]:
    if features is None:
        names = [c for c in frame.columns if c != target]
    else:
        names = list(dict.fromkeys(features))
        unknown = [n for n in names if n not in frame.columns]
        if unknown:
            raise DataError(f"{source} has no column(s) {name_list(unknown)} (named by --features); "
                            f"columns are: {name_list(frame.columns)}", path=source, column=unknown[0])
        if target in names:
            raise DataError(f"column {target!r} is the target; it cannot also be a feature (--features)",
                            path=source, column=target)
    if not names:
        raise DataError(f"{source} has no feature columns besides the target {target!r}", path=source)
    return names


def _is_numeric(column: pd.Series, name: str, source: str) -> bool:
    """Numbers and booleans: numeric. Text: categorical, unless it is mostly numbers with a few stray
    values, which is a typo to fix rather than a feature with one category per number."""
    if pd.api.types.is_numeric_dtype(column):  # bools included
        return True
    present = column.dropna()
    as_numbers = pd.to_numeric(present, errors="coerce")
    bad = as_numbers.isna().to_numpy()
    if len(present) and bad.mean() < 0.5 and not isinstance(column.dtype, pd.CategoricalDtype):
        row = int(np.flatnonzero(column.notna().to_numpy())[np.argmax(bad)])
        what = f"row {row} holds {column.iloc[row]!r}" if bad.any() else "its numbers are stored as text"
        raise DataError(
            f"feature column {name!r} in {source} is mostly numbers but not numeric ({column.dtype}): "
            f"{what}; fix those values or convert the column, or leave it out with --features "
            "(a text column with mostly non-numbers is taken as categorical)",
            path=source, column=name, row=row,
        )
    return False


def _categories(column: pd.Series, name: str, source: str) -> np.ndarray:
    """The column as str objects, NaN where a value is missing (the model takes it as a category)."""
    missing = column.isna().to_numpy()
    if missing.all():
        raise DataError(f"categorical feature column {name!r} in {source} has no values; leave it out with "
                        "--features", path=source, column=name)
    values = np.array([np.nan if m else str(v) for v, m in zip(column.tolist(), missing, strict=True)],
                      dtype=object)
    distinct = len(set(values[~missing].tolist()))
    if distinct > MAX_CATEGORIES:
        raise DataError(
            f"categorical feature column {name!r} in {source} has {distinct} distinct values; one-hot "
            f"encoding takes at most {MAX_CATEGORIES}: leave the column out with --features (an identifier "
            "or free text is no categorical feature), or group its rare values",
            path=source, column=name, limit=MAX_CATEGORIES,
        )
    return values


def _check_numbers(values: np.ndarray, name: str, source: str, missing: bool) -> bool:
    """Refuse infinities, values beyond float32 and (unless ``missing``) NaN; True if NaN is present."""
    nan = np.isnan(values)
    if nan.all():
        raise DataError(f"feature column {name!r} in {source} has no values: leave it out with --features",
                        path=source, column=name)
    bad = ~np.isfinite(values) & (~nan if missing else True)
    if bad.any():
        rows = np.flatnonzero(bad)
        hint = ("" if missing or not nan.any() else
                ", or choose an estimator that handles missing values (--estimator hist_gradient_boosting, "
                "random_forest, extra_trees or decision_tree)")
        what = "infinite" if missing or not nan.any() else "missing or infinite"
        raise DataError(
            f"feature column {name!r} in {source} has {len(rows)} {what} value(s) (rows {row_list(rows)}); "
            f"fill or drop those rows, or leave the column out with --features{hint}",
            path=source, column=name, row=int(rows[0]),
        )
    with np.errstate(invalid="ignore"):
        huge = np.abs(values) > np.finfo(np.float32).max
    if huge.any():
        row = int(np.argmax(huge))
        raise DataError(
            f"feature column {name!r} in {source} holds {values[row]:g} (row {row}), beyond the float32 "
            "range in which tree models compare values (about 3.4e38): rescale the column",
            path=source, column=name, row=row,
        )
    return bool(nan.any())


def split(data: Dataset, test_size: float, seed: int) -> Split:
    """A holdout split, stratified for classification; ``holdout_ids`` are the rows' numbers in the source."""
    n = data.rows
    n_holdout = math.ceil(test_size * n)
    n_classes = len(data.target.classes or ())
    need = max(1, n_classes)
    if n_holdout < need or n - n_holdout < need:
        what = f"each of the {n_classes} classes" if n_classes else "a row"
        raise DataError(
            f"{data.source}: a test size of {test_size} splits {n} rows into {n - n_holdout} for training "
            f"and {n_holdout} for the holdout, but both need {what}; adjust --test-size or add rows",
            path=data.source,
        )
    y = data.target.values
    parts = train_test_split(data.X, y, np.arange(n), test_size=n_holdout, random_state=seed,
                             stratify=y if n_classes else None)
    X_train, X_holdout, y_train, y_holdout, _, holdout_ids = parts
    if data.source_rows is not None:
        holdout_ids = data.source_rows[holdout_ids]
    X_train, X_holdout = X_train.reset_index(drop=True), X_holdout.reset_index(drop=True)
    unseen = sorted(set(data.target.classes or ()) - set(y_train.tolist()))
    if unseen:  # stratification rounds; a rare class can end up in the holdout only
        raise DataError(
            f"{data.source}: with a test size of {test_size}, no training row has class(es) "
            f"{', '.join(map(repr, unseen))}; lower --test-size or add rows of those classes",
            path=data.source,
        )
    return Split(X_train, y_train, X_holdout, y_holdout, holdout_ids)
