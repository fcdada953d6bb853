"""Training data: read a CSV or Parquet file, pick the features, split it, or say precisely what is wrong."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tabserve.core.manifest import Task
from tabserve.errors import DataError
from tabserve.training.rows import name_list, row_list
from tabserve.training.target import Target, prepare_target

FILE_KINDS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
MIN_ROWS = 20
_LATER_ISSUE = "string and categorical features are not supported yet (planned)"


@dataclass(frozen=True, slots=True)
class Table:
    """A source file as read: its rows, the name messages use, and a fingerprint of its bytes."""

    frame: pd.DataFrame
    name: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """Checked, numeric training data: every value finite, every class present often enough to split."""

    X: np.ndarray  # (rows, features) float64
    target: Target
    features: list[str]
    feature_dtypes: list[str]
    source: str
    fingerprint: str
    columns: int

    @property
    def rows(self) -> int:
        return len(self.X)


@dataclass(frozen=True, slots=True)
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    holdout_ids: np.ndarray


def fingerprint(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def read_table(path: str | Path) -> Table:
    """Read ``.csv``, ``.tsv`` or ``.parquet``/``.pq``; any problem is one ``DataError`` naming the file."""
    p = Path(path).expanduser()
    kind = FILE_KINDS.get(p.suffix.lower())
    if kind is None:
        raise DataError(
            f"{p.name}: unsupported file type {p.suffix or '(no extension)'!r}; "
            f"tabserve reads {', '.join(FILE_KINDS)} files",
            path=str(p),
        )
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file", path=str(p)) from None
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}", path=str(p)) from exc
    if not raw.strip():
        raise DataError(f"{p.name} is empty: expected a header row and at least {MIN_ROWS} data rows",
                        path=str(p))
    frame = _parse(raw, kind, p)
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError(f"{p.name} has no data rows (columns: {name_list(frame.columns)}); "
                        f"at least {MIN_ROWS} are needed", path=str(p))
    frame.columns = [str(c) for c in frame.columns]
    return Table(frame=frame, name=p.name, fingerprint=fingerprint(raw))


def _parse(raw: bytes, kind: str, path: Path) -> pd.DataFrame:
    try:
        if kind == "parquet":
            return pd.read_parquet(io.BytesIO(raw), engine="pyarrow")
        return pd.read_csv(io.BytesIO(raw), sep="\t" if kind == "tsv" else ",")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name} is empty: expected a header row and at least {MIN_ROWS} data rows",
                        path=str(path)) from None
    except Exception as exc:  # pandas and pyarrow raise many types for a malformed file
        raise DataError(f"{path.name} cannot be read as {kind.upper()}: {exc}", path=str(path)) from exc


def prepare(table: Table, target: str, features: Sequence[str] | None = None,
            task: Task | None = None) -> Dataset:
    """Choose the columns, check every value, and decide the task (``task`` overrides the guess)."""
    frame, source = table.frame, table.name
    if target not in frame.columns:
        raise DataError(f"{source} has no column {target!r} (the --target); "
                        f"columns are: {name_list(frame.columns)}", path=source, column=target)
    names = _feature_names(frame, target, features, source)
    if len(frame) < MIN_ROWS:
        raise DataError(f"{source} has {len(frame)} data rows; at least {MIN_ROWS} are needed to train "
                        "and keep a holdout for metrics and parity", path=source, limit=MIN_ROWS)
    X = np.column_stack([_numeric(frame[name], name, source) for name in names])
    _check_finite(X, names, source)
    return Dataset(
        X=X,
        target=prepare_target(frame[target], task, source),
        features=names,
        feature_dtypes=[str(frame[n].dtype) for n in names],
        source=source,
        fingerprint=table.fingerprint,
        columns=frame.shape[1],
    )


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


def _numeric(column: pd.Series, name: str, source: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):  # bools included
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    as_numbers = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & as_numbers.isna()
    row = int(np.argmax(bad.to_numpy())) if bad.any() else int(np.argmax(column.notna().to_numpy()))
    raise DataError(
        f"feature column {name!r} in {source} is not numeric ({column.dtype}): row {row} holds "
        f"{column.iloc[row]!r}; {_LATER_ISSUE}: convert the column to numbers, "
        "or leave it out with --features",
        path=source, column=name, row=row,
    )


def _check_finite(X: np.ndarray, names: list[str], source: str) -> None:
    finite = np.isfinite(X)
    if not finite.all():
        col = int(np.argmax(~finite.all(axis=0)))
        rows = np.flatnonzero(~finite[:, col])
        raise DataError(
            f"feature column {names[col]!r} in {source} has {len(rows)} missing or infinite value(s) "
            f"(rows {row_list(rows)}); fill or drop those rows, or leave the column out with --features",
            path=source, column=names[col], row=int(rows[0]),
        )
    huge = np.abs(X) > np.finfo(np.float32).max
    if huge.any():
        row, col = (int(i) for i in np.argwhere(huge)[0])
        raise DataError(
            f"feature column {names[col]!r} in {source} holds {X[row, col]:g} (row {row}), beyond the "
            "float32 range of the model input (about 3.4e38): rescale the column",
            path=source, column=names[col], row=row,
        )


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
    unseen = sorted(set(data.target.classes or ()) - set(y_train.tolist()))
    if unseen:  # stratification rounds; a rare class can end up in the holdout only
        raise DataError(
            f"{data.source}: with a test size of {test_size}, no training row has class(es) "
            f"{', '.join(map(repr, unseen))}; lower --test-size or add rows of those classes",
            path=data.source,
        )
    return Split(X_train, y_train, X_holdout, y_holdout, holdout_ids)
