"""Turn request data into the model's input array, or say precisely what is wrong with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from tabserve.core.manifest import Manifest
from tabserve.errors import InvalidInput

RangePolicy = Literal["off", "warn", "reject"]
_NUMERIC_KINDS = "fiub"  # float, int, unsigned, bool (JSON true/false are read as 1/0)
_MAX_MESSAGES = 10


class FeatureSchema:
    """The model's features, their order, dtype and training ranges."""

    def __init__(self, manifest: Manifest, dtype: np.dtype[Any]) -> None:
        self.names = manifest.feature_names
        self.count = len(self.names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.name_set = frozenset(self.names)
        self.dtype = np.dtype(dtype)
        stats = [f.stats for f in manifest.features]
        self.has_ranges = all(s is not None for s in stats)
        self.mins = np.array([s.min if s else -np.inf for s in stats], dtype=np.float64)
        self.maxs = np.array([s.max if s else np.inf for s in stats], dtype=np.float64)

    def describe(self, col: int) -> str:
        return f"feature {self.names[col]!r} (column {col})"

    # -- building the array -------------------------------------------------------------------------

    def row(self, data: Any) -> np.ndarray:
        """One row as a flat list of values -> array of shape (1, F)."""
        if not isinstance(data, list):
            raise InvalidInput(
                f"'data' must be a list of {self.count} numbers, one per feature ({self._list_names()}); "
                f"got {type(data).__name__}",
            )
        try:
            arr = np.array(data)
        except ValueError:
            arr = np.empty(0, dtype=object)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1 or arr.dtype.kind not in _NUMERIC_KINDS or arr.shape[0] != self.count:
            self._explain_row(data, None)
            arr = np.array(data, dtype=np.float64)  # valid numbers numpy kept as objects (huge ints)
        return self.as_input(arr.reshape(1, -1), single=True)

    def rows(self, data: Any, *, max_rows: int) -> np.ndarray:
        """A list of rows (lists of values) -> array of shape (N, F)."""
        self._check_row_count(data, "data", max_rows)
        try:
            arr = np.array(data)
        except ValueError:  # ragged
            arr = np.empty(0, dtype=object)
        if arr.ndim != 2 or arr.dtype.kind not in _NUMERIC_KINDS or arr.shape[1] != self.count:
            for i, r in enumerate(data):
                self._explain_row(r, i)
            arr = np.array(data, dtype=np.float64)  # valid numbers numpy kept as objects (huge ints)
        return self.as_input(arr, single=False)

    def records(self, records: Any, *, max_rows: int) -> np.ndarray:
        """A list of ``{feature: value}`` objects -> array of shape (N, F), columns in model order."""
        self._check_row_count(records, "records", max_rows)
        names, name_set = self.names, self.name_set
        rows: list[list[Any]] = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise InvalidInput(
                    f"row {i}: each record must be an object of feature: value; got {type(rec).__name__}",
                    row=i,
                )
            if rec.keys() != name_set:
                self._explain_keys(rec, i)
            rows.append([rec[n] for n in names])
        return self.rows(rows, max_rows=max_rows)

    def _check_row_count(self, data: Any, field: str, max_rows: int) -> None:
        if not isinstance(data, list):
            raise InvalidInput(f"'{field}' must be a list of rows; got {type(data).__name__}")
        if not data:
            raise InvalidInput(f"'{field}' is empty: send at least one row", limit=1)
        if len(data) > max_rows:
            raise InvalidInput(
                f"'{field}' has {len(data)} rows; the limit is {max_rows} rows per request: split the batch",
                limit=max_rows,
            )

    def as_input(self, arr: np.ndarray, *, single: bool) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by feature
            out = np.ascontiguousarray(arr, dtype=self.dtype)
        finite = np.isfinite(out)
        if not finite.all():
            r, c = (int(x) for x in np.argwhere(~finite)[0])
            original = float(arr[r, c])
            what = (
                f"{original!r} is outside the {self.dtype.name} range of the model input"
                if np.isfinite(original)
                else f"{original!r} is not a finite number"
            )
            raise InvalidInput(
                f"{self._where(r, c, single)}: {what}; finite numbers are required",
                row=None if single else r,
                feature=self.names[c],
            )
        return out

    # -- explaining what is wrong -------------------------------------------------------------------

    def _where(self, row: int | None, col: int, single: bool = False) -> str:
        return self.describe(col) if single or row is None else f"row {row}, {self.describe(col)}"

    def _list_names(self) -> str:
        shown = ", ".join(self.names[:8])
        return shown + (f", ... ({self.count} in all)" if self.count > 8 else "")

    def _explain_row(self, row: Any, i: int | None) -> None:
        prefix = "" if i is None else f"row {i}: "
        if not isinstance(row, list):
            raise InvalidInput(f"{prefix}a row must be a list of {self.count} numbers; got {type(row).__name__}",
                               row=i)
        if len(row) != self.count:
            raise InvalidInput(
                f"{prefix}got {len(row)} values but the model expects {self.count} features "
                f"({self._list_names()})",
                row=i, limit=self.count,
            )
        for c, v in enumerate(row):
            problem = _value_problem(v)
            if problem:
                raise InvalidInput(f"{self._where(i, c, i is None)}: {problem}", row=i, feature=self.names[c])

    def _explain_keys(self, rec: dict[str, Any], i: int) -> None:
        missing = [n for n in self.names if n not in rec]
        unknown = sorted(k for k in rec if k not in self.index)
        parts = []
        if missing:
            parts.append(f"missing feature(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown feature(s) {', '.join(map(repr, unknown))}")
        raise InvalidInput(
            f"row {i}: {' and '.join(parts)}; the model expects exactly: {self._list_names()}",
            row=i, feature=(missing or unknown)[0],
        )

    # -- ranges -------------------------------------------------------------------------------------

    def check_ranges(self, arr: np.ndarray, policy: RangePolicy, *, single: bool) -> list[str]:
        """Values outside the training min/max: warnings (``warn``), an error (``reject``) or nothing."""
        if policy == "off" or not self.has_ranges:
            return []
        low = arr < self.mins
        high = arr > self.maxs
        if not (low.any() or high.any()):
            return []
        messages = []
        bad = np.argwhere(low | high)
        for r, c in bad[:_MAX_MESSAGES]:
            r, c = int(r), int(c)
            v = float(arr[r, c])
            side = f"below the training minimum {self.mins[c]:.6g}" if low[r, c] else (
                f"above the training maximum {self.maxs[c]:.6g}")
            messages.append(f"{self._where(r, c, single)}: value {v:.6g} is {side}")
        if len(bad) > _MAX_MESSAGES:
            messages.append(f"... and {len(bad) - _MAX_MESSAGES} more value(s) outside the training range")
        if policy == "reject":
            r, c = (int(x) for x in bad[0])
            raise InvalidInput(
                messages[0] + " (range policy is 'reject')", row=None if single else r, feature=self.names[c],
            )
        return messages


def _value_problem(v: Any) -> str | None:
    if v is None:
        return "the value is null; a number is required (missing values are not accepted by this model)"
    if isinstance(v, str):
        return f"{v!r} is a string; a number is required"
    if isinstance(v, bool | int | float):
        return None
    if isinstance(v, Sequence | dict):
        return f"the value is a nested {type(v).__name__}; a number is required"
    return f"{v!r} is not a number"
