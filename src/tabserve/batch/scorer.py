"""One chunk of a table in, the same rows with their predictions out: columnar from end to end (no pandas).

The feature columns of an Arrow chunk become the model input directly (one cast per column, no Python
objects for numeric models); the outputs become Arrow columns appended to the kept input columns:
``prediction`` (a value or a label), then a classifier's ``probability_<class>`` columns, or an anomaly
model's ``score`` (``score_samples``) and ``decision`` (``decision_function``), as v1 answers one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tabserve.core.model import Model
from tabserve.core.schema import MISSING_CATEGORY, ModelInput, TabularBatch
from tabserve.errors import DataError, InvalidInput

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"
ANOMALY_SCORES = ("score", "decision")  # the columns of Prediction.probabilities for an anomaly model

Chunk = pa.RecordBatch | pa.Table


class ChunkScorer:
    """Scores Arrow chunks with ``model``; ``keep`` names the input columns copied to the output (None: all)."""

    def __init__(self, model: Model, keep: Sequence[str] | None = None) -> None:
        self.model = model
        self.keep = list(keep) if keep is not None else None
        self.output_names = [PREDICTION]
        if model.is_classifier and model.classes is not None and model.manifest.output("probabilities"):
            self.output_names += [f"{PROBABILITY_PREFIX}{c}" for c in model.classes]
        elif model.is_anomaly and model.manifest.output("decision"):
            self.output_names += list(ANOMALY_SCORES)

    def check_columns(self, names: Sequence[str], source: str) -> None:
        """Refuse, before scoring anything, an input that lacks a feature or would clash with the outputs."""
        present = set(names)
        missing = [f for f in self.model.schema.names if f not in present]
        if missing:
            raise DataError(f"{source} lacks the feature column(s) {', '.join(map(repr, missing))} that model "
                            f"{self.model.name}:{self.model.version} needs; its columns are: "
                            f"{_shown(names)}", feature=missing[0])
        if self.keep is not None:
            unknown = [c for c in self.keep if c not in present]
            if unknown:
                raise DataError(f"--keep names column(s) {', '.join(map(repr, unknown))} that {source} does not "
                                f"have; its columns are: {_shown(names)}")
        kept = self.keep if self.keep is not None else list(names)
        clash = [c for c in self.output_names if c in kept]
        if clash:
            raise DataError(f"{source} already has a column {clash[0]!r}, which the output adds; choose the "
                            "input columns to copy with --keep (e.g. --keep id)")

    def score(self, chunk: Chunk, *, first_row: int | None = 0) -> pa.Table:
        """The kept columns of ``chunk`` followed by its predictions. ``first_row`` (the chunk's position in the
        file) numbers rows in error messages; None when unknown (chunks spread over workers)."""
        x = self.model_input(chunk, first_row)
        prediction = self.model.run(x)
        kept = self.keep if self.keep is not None else chunk.schema.names
        columns = [chunk.column(name) for name in kept]
        columns.append(pa.array(prediction.values))
        if len(self.output_names) > 1 and prediction.probabilities is not None:  # per class, or score/decision
            proba = prediction.probabilities
            columns += [pa.array(proba[:, j]) for j in range(proba.shape[1])]
        return pa.Table.from_arrays(columns, names=[*kept, *self.output_names])

    def model_input(self, chunk: Chunk, first_row: int | None) -> ModelInput:
        schema = self.model.schema
        try:
            numeric = None
            if schema.numeric_cols:
                cols = [_as_float(chunk, schema.names[c], first_row) for c in schema.numeric_cols]
                arr = np.column_stack(cols) if len(cols) > 1 else cols[0].reshape(-1, 1)
                numeric = schema.as_input(arr, single=False, cols=schema.numeric_cols)
            if not schema.categorical_cols:
                assert numeric is not None
                return numeric
            cat = np.column_stack([self._strings(chunk, c, first_row) for c in schema.categorical_cols])
            return TabularBatch(numeric, cat)
        except InvalidInput as exc:
            raise _renumbered(exc, first_row) from exc

    def _strings(self, chunk: Chunk, col: int, first_row: int | None) -> np.ndarray:
        schema = self.model.schema
        name = schema.names[col]
        column = chunk.column(name)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            if pa.types.is_dictionary(column.type) or pa.types.is_null(column.type):  # null: every value missing
                column = column.cast(pa.string())
            else:
                raise DataError(f"column {name!r} holds {column.type} values but this categorical feature takes "
                                f"strings", feature=name)
        nulls = column.null_count
        missing_ok = col in schema.missing_categories  # the model takes a missing text value (core/schema.py)
        if nulls and missing_ok:
            column = pc.fill_null(column, MISSING_CATEGORY)
        elif nulls:
            row = _first(pc.is_null(column))
            raise InvalidInput(f"{_row(row, first_row)}, column {name!r}: the value is missing; this categorical "
                            "feature needs a value (the model does not take missing values here)",
                            row=_abs(row, first_row), feature=name)
        known = schema.categories.get(col)
        if not missing_ok and known is not None and MISSING_CATEGORY not in known:
            empty = pc.equal(column, MISSING_CATEGORY)  # an empty CSV field: pyarrow reads text as ""
            if pc.any(empty).as_py():
                row = _first(empty)
                raise InvalidInput(f"{_row(row, first_row)}, column {name!r}: the value is missing (empty); this "
                                   "categorical feature needs a value (the model does not take missing values here)",
                                   row=_abs(row, first_row), feature=name)
        if known is not None:
            allowed = sorted(known | {MISSING_CATEGORY}) if missing_ok else sorted(known)
            ok = pc.is_in(column, value_set=pa.array(allowed, type=pa.string()))
            if not pc.all(ok).as_py():
                row = _first(pc.invert(ok))
                raise InvalidInput(f"{_row(row, first_row)}, column {name!r}: unknown category "
                                f"{_value(column, row)!r}; the model knows only {_shown(sorted(known), 20)}",
                                row=_abs(row, first_row), feature=name)
        return column.to_numpy(zero_copy_only=False).astype(object)


def _as_float(chunk: Chunk, name: str, first_row: int | None) -> np.ndarray:
    """A numeric feature as float64, null as NaN; a value that is not a number is named with its row."""
    column = chunk.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not pa.types.is_floating(column.type):
        try:
            column = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            row = first_non_number(column)
            shown = f"{_value(column, row)!r} is not a number" if row is not None else (
                f"{column.type} values are not numbers")
            raise InvalidInput(f"{_row(row or 0, first_row)}, column {name!r}: {shown}; this feature takes numbers",
                            row=_abs(row or 0, first_row), feature=name) from None
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def first_non_number(column: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first non-null value that does not parse as a number (the slow path, errors only)."""
    for i, v in enumerate(column.to_pylist()):
        if v is None or isinstance(v, (int, float, bool)):
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            return i
    return None


def _renumbered(exc: InvalidInput, first_row: int | None) -> InvalidInput:
    """The schema numbers rows within the chunk; the user wants them within the file."""
    row = exc.context.get("row")
    if row is None:
        return exc
    message = exc.message
    prefix = f"row {row}"
    if message.startswith(prefix):
        message = _row(row, first_row) + message[len(prefix):]
    return InvalidInput(message, **{**exc.context, "row": _abs(row, first_row)})


def _abs(row: int, first_row: int | None) -> int | None:
    return None if first_row is None else first_row + row


def _row(row: int, first_row: int | None) -> str:
    if first_row is None:  # a Ray worker sees its batch, not where the batch sits in the file
        return f"row {row} of a batch (rerun without --ray for its row in the file)"
    return f"row {first_row + row}"


def _first(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.index(mask, True).as_py())


def _value(column: pa.Array | pa.ChunkedArray, row: int) -> Any:
    return column[row].as_py()


def _shown(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
