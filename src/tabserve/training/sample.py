"""The sample of an imported model: which columns are its features, what they hold, and the target.

The sample stands in for the training data that ``tabserve train`` would have: it names the features
(matched to the model's own names when it has some), gives their statistics and categories, and is the
parity check's holdout. With a target column it also gives holdout metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tabserve.core.manifest import Feature, Task
from tabserve.errors import DataError, ExportError
from tabserve.training.convert.columns import selections
from tabserve.training.convert.encoders import is_missing
from tabserve.training.rows import name_list, row_list
from tabserve.training.tables import MIN_ROWS, Table

Unknown = Literal["error", "ignore"]  # what a model does with a category it does not know
# feature name -> (the categories the model's OneHotEncoder knows, what it does with an unknown one)
Categories = Mapping[str, tuple[list[str], Unknown]]


def match_features(table: Table, names: Sequence[str] | None, count: int | None, target: str | None, *,
                   spelled: Callable[[str], str] | None = None,
                   ignore: Sequence[str] = ()) -> tuple[list[str], str]:
    """The feature columns in the model's order, and how they were matched (for the progress line).

    ``names``: the model's own feature names (None when it has only positions); ``count``: how many
    features it takes, when known; ``spelled``: how the model writes a column's name, when it changes
    names (LightGBM writes spaces as '_'); the columns keep the sample's names. ``ignore``: columns of
    the sample that are not features (an id, a date), left out like the target."""
    frame, source = table.frame, table.name
    if len(frame) < MIN_ROWS:
        raise DataError(f"the sample {source} has {len(frame)} rows; at least {MIN_ROWS} are needed for "
                        "the features' statistics and the parity check", path=source, limit=MIN_ROWS)
    if target is not None and target not in frame.columns:
        raise DataError(f"the sample {source} has no column {target!r} (the --target); columns are: "
                        f"{name_list(frame.columns)}", path=source, column=target)
    absent = [c for c in ignore if c not in frame.columns]
    if absent:
        raise DataError(f"the sample {source} has no column(s) {name_list(absent)} (given to --ignore); "
                        f"columns are: {name_list(frame.columns)}", path=source, column=absent[0])
    columns = [str(c) for c in frame.columns if c != target and c not in set(ignore)]
    hint = ("" if target is not None else " (if one of them is the target, name it with --target)") + \
        "; leave out columns that are not features (an id) with --ignore COLUMN"
    if names is not None:
        spell = spelled or str
        by_spelling = {spell(c): c for c in columns}
        missing = [n for n in names if n not in by_spelling]
        extra = [c for c in columns if spell(c) not in names]
        if missing or extra:
            parts = ([f"lacks the model's feature(s) {name_list(missing)}"] if missing else []) + \
                ([f"has column(s) {name_list(extra)} the model does not take{hint}"] if extra else [])
            respelled = {c.replace(" ", "_") for c in extra}
            if missing and all(n in respelled for n in missing):
                parts[-1] += " (LightGBM writes a space in a name as '_': rename those columns)"
            raise DataError(f"the sample {source} does not match the model's features: it "
                            f"{' and '.join(parts)}. The model's features, in order: {name_list(names)}",
                            path=source, column=(missing or extra)[0])
        matched = [by_spelling[n] for n in names]
        how = f"{len(names)} features named by the model and found in the sample"
        if matched != list(names):
            how += ", as the model spells them (LightGBM writes spaces as '_')"
        return matched, how + (", in the model's order" if matched != columns else "")
    if count is not None and len(columns) != count:
        raise DataError(f"the model takes {count} features, known only by position, but the sample {source} "
                        f"has {len(columns)} columns{' besides the target' if target else ''}: "
                        f"{name_list(columns)}{hint}", path=source)
    if not columns:
        raise DataError(f"the sample {source} has no feature columns besides the target {target!r}",
                        path=source)
    return columns, (f"the model does not name its features; taking the sample's {len(columns)} columns "
                     f"in order as its features: {name_list(columns, limit=8)}")


def feature_specs(table: Table, names: Sequence[str], *, numeric_only: bool,
                  categories: Categories) -> tuple[pd.DataFrame, list[Feature]]:
    """The feature columns as the parity check takes them, and their manifest entries.

    ``numeric_only``: the model takes numbers only (a native Booster). ``allow_missing`` says which
    features hold NaN in the sample (a missing text value is NaN too) (``missing.decide_missing`` then asks the model). ``categories``: what
    the model's encoders know of text features; others take the sample's values."""
    frame, source = table.frame, table.name
    columns, specs = {}, []
    for name in names:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            nan = np.isnan(values)
            if nan.all():
                raise DataError(f"feature column {name!r} in the sample {source} has no values; the sample "
                                "must show each feature's values", path=source, column=name)
            infinite = np.flatnonzero(np.isinf(values))
            if len(infinite):
                raise DataError(f"feature column {name!r} in the sample {source} has {len(infinite)} "
                                f"infinite value(s) (rows {row_list(infinite)}); fix or drop those rows",
                                path=source, column=name, row=int(infinite[0]))
            specs.append(Feature(name=name, dtype=str(column.dtype), allow_missing=bool(nan.any())))
        else:
            values = _text(column, name, source, numeric_only)
            present = values[column.notna().to_numpy()]  # NaN: a missing value, as the model takes it
            known, unknown = categories.get(name, (sorted(set(present.tolist())), "error"))
            _check_known(present, known, unknown, name, source)
            specs.append(Feature(name=name, dtype="str", kind="categorical", categories=list(known),
                                 handle_unknown=unknown, allow_missing=len(present) < len(values)))
        columns[name] = values
    return pd.DataFrame(columns, columns=list(names)), specs


def _text(column: pd.Series, name: str, source: str, numeric_only: bool) -> np.ndarray:
    if numeric_only:
        raise DataError(f"feature column {name!r} in the sample {source} holds text ({column.dtype}, e.g. "
                        f"{column.dropna().iloc[0]!r}), but the model takes numbers only: encode the column "
                        "as it was encoded for training", path=source, column=name)
    missing = column.isna().to_numpy()
    if missing.all():
        raise DataError(f"text feature column {name!r} in the sample {source} has no values; the sample must "
                        "show each feature's values", path=source, column=name)
    return np.array([np.nan if m else str(v) for v, m in zip(column.tolist(), missing, strict=True)],
                    dtype=object)


def _check_known(values: np.ndarray, known: Sequence[str], unknown: str, name: str, source: str) -> None:
    if unknown != "error":
        return
    rows = np.flatnonzero(~np.isin(values, np.array(list(known), dtype=object)))
    if len(rows):
        raise DataError(f"feature column {name!r} in the sample {source} holds {values[rows[0]]!r} (row "
                        f"{int(rows[0])}), a category the model refuses; it knows {name_list(known)}",
                        path=source, column=name, row=int(rows[0]))


def model_categories(model: Any, names: Sequence[str]) -> dict[str, tuple[list[str], Unknown]]:
    """Text features that the model's first step one-hot encodes (a OneHotEncoder, or one inside a
    ColumnTransformer), with the encoder's categories. An encoder found nowhere else is not looked for."""
    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    blocks: list[tuple[Any, list[str]]] = [(first, list(names))]
    if isinstance(first, ColumnTransformer):
        try:
            blocks = [(t, cols) for _, t, cols in selections(first, names)]
        except ExportError:
            return {}  # the export says what is wrong
    found: dict[str, tuple[list[str], Unknown]] = {}
    for transformer, cols in blocks:
        encoder = _encoder(transformer)
        if encoder is None:
            continue
        for col, cats in zip(cols, encoder.categories_, strict=False):
            texts = [c for c in cats.tolist() if not is_missing(c)]  # a missing category: allow_missing
            if all(isinstance(c, str) for c in texts):
                unknown: Unknown = "error" if encoder.handle_unknown == "error" else "ignore"
                found[col] = ([str(c) for c in texts], unknown)
    return found


def _encoder(transformer: Any) -> OneHotEncoder | None:
    if isinstance(transformer, Pipeline):
        steps = [s for _, s in transformer.steps if isinstance(s, OneHotEncoder)]
        return steps[0] if steps else None
    return transformer if isinstance(transformer, OneHotEncoder) else None


def target_values(table: Table, target: str, task: Task, classes: Sequence[Any] | None) -> np.ndarray:
    """The target column as the model's outputs: float64, or labels of the ``classes``' type."""
    column, source = table.frame[target], table.name
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise DataError(f"target column {target!r} in the sample {source} has {len(missing)} missing "
                        f"value(s) (rows {row_list(missing)}); drop those rows or fill them in",
                        path=source, column=target, row=int(missing[0]))
    if task == "regression":
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            raise DataError(f"target column {target!r} in the sample {source} is not numeric "
                            f"({column.dtype}); the model is a regressor", path=source, column=target)
        return column.to_numpy(dtype=np.float64)
    labels = list(classes or [])
    if all(isinstance(c, str) for c in labels):
        y = column.astype(str).to_numpy(dtype=object)
    else:
        y = _integer_labels(column, target, source, labels)
    unknown = [v for v in dict.fromkeys(y.tolist()) if v not in set(labels)]
    if unknown:
        row = int(np.flatnonzero(y == unknown[0])[0])
        raise DataError(f"target column {target!r} in the sample {source} holds {unknown[0]!r} (row {row}), "
                        f"which is not one of the model's classes {name_list(labels)}; a native model's "
                        "classes can be named with --classes, in the model's order", path=source,
                        column=target, row=row)
    return y


def _integer_labels(column: pd.Series, target: str, source: str, classes: list[Any]) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64)
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values) | (values != np.round(values)))
    if len(bad):
        row = int(bad[0])
        raise DataError(f"target column {target!r} in the sample {source} holds {column.iloc[row]!r} (row "
                        f"{row}), but the model's classes are the numbers {name_list(classes)}; a native "
                        "model's classes can be named with --classes, in the model's order, e.g. "
                        f"--classes {','.join(map(str, sorted(set(column.astype(str)))[:len(classes)]))}",
                        path=source, column=target, row=row)
    return values.astype(np.int64)
