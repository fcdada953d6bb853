"""The target column: which task it calls for, and its values as the estimator needs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabserve.core.manifest import Task
from tabserve.errors import DataError
from tabserve.training.rows import row_list

MAX_CLASSES_GUESSED = 20  # an integer target with at most this many distinct values is taken as class labels
MIN_ROWS_PER_CLASS = 2  # one for training, one for the holdout


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    dtype: str  # of the source column
    task: Task
    reason: str  # why this task, for the progress line
    values: np.ndarray  # float64 (regression), int64 or str objects (classification)
    classes: list[Any] | None  # JSON-able labels in sorted order, as the classifier's ``classes_``


def detect_task(column: pd.Series) -> tuple[Task, str]:
    """Non-numeric, bool or integer with few distinct values: classification; other numbers: regression."""
    name = column.name
    if pd.api.types.is_bool_dtype(column):
        return "classification", f"target {name!r} is boolean"
    if not pd.api.types.is_numeric_dtype(column):
        return "classification", f"target {name!r} is not numeric ({column.dtype})"
    if pd.api.types.is_integer_dtype(column):
        distinct = column.nunique()
        if distinct <= MAX_CLASSES_GUESSED:
            return "classification", (f"target {name!r} holds integers with {distinct} distinct values "
                                      f"(<= {MAX_CLASSES_GUESSED})")
        return "regression", (f"target {name!r} holds integers with {distinct} distinct values "
                              f"(> {MAX_CLASSES_GUESSED})")
    return "regression", f"target {name!r} holds floating-point numbers"


def prepare_target(column: pd.Series, task: Task | None, source: str) -> Target:
    name = str(column.name)
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise DataError(
            f"target column {name!r} in {source} has {len(missing)} missing value(s) "
            f"(rows {row_list(missing)}); drop those rows or fill them in",
            path=source, column=name, row=int(missing[0]),
        )
    if task is None:
        task, reason = detect_task(column)
        reason += "; pass --task to choose"
    else:
        reason = "chosen with --task"
    if task == "regression":
        values, classes = _regression_values(column, source), None
    else:
        values = _class_labels(column, source)
        classes = _check_classes(values, name, source)
    return Target(name=name, dtype=str(column.dtype), task=task, reason=reason, values=values,
                  classes=classes)


def _regression_values(column: pd.Series, source: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        raise DataError(
            f"target column {column.name!r} in {source} is not numeric ({column.dtype}, "
            f"e.g. {column.iloc[0]!r}); regression needs numbers: use --task classification, "
            "or convert the column",
            path=source, column=str(column.name),
        )
    return column.to_numpy(dtype=np.float64)


def _class_labels(column: pd.Series, source: str) -> np.ndarray:
    """int64 labels for integer-like targets (bools become 0/1), str labels for anything else."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        fractional = np.flatnonzero(values != np.round(values))
        if len(fractional):
            row = int(fractional[0])
            raise DataError(
                f"target column {column.name!r} in {source} holds fractional numbers "
                f"(row {row}: {values[row]!r}); class labels must be whole numbers or text: "
                "use --task regression",
                path=source, column=str(column.name), row=row,
            )
        return values.astype(np.int64)
    return column.astype(str).to_numpy(dtype=object)


def _check_classes(labels: np.ndarray, name: str, source: str) -> list[Any]:
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"target column {name!r} in {source} has a single class ({classes[0]!r}); "
            "classification needs at least two",
            path=source, column=name,
        )
    rare = [(c, n) for c, n in zip(classes, counts, strict=True) if n < MIN_ROWS_PER_CLASS]
    if rare:
        shown = ", ".join(f"{c!r} ({n} row)" for c, n in rare[:5])
        raise DataError(
            f"target column {name!r} in {source}: class(es) {shown} have fewer than "
            f"{MIN_ROWS_PER_CLASS} rows; each class needs one row for training and one for the holdout: "
            "add rows or drop those classes",
            path=source, column=name,
        )
    return [c.item() if isinstance(c, np.generic) else c for c in classes]
