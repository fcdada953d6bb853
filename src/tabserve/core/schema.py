"""Turn request data into the model's input, or say precisely what is wrong with it.

A model whose features are all numeric takes one ``(N, F)`` array (the hot path); a model with
categorical (string) features takes a ``TabularBatch``: the numeric columns and the string columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isfinite
from operator import le
from typing import Any, Literal

import numpy as np

from tabserve.core.manifest import Manifest
from tabserve.core.quoting import quoted
from tabserve.core.values import value_problem
from tabserve.errors import InvalidInput

RangePolicy = Literal["off", "warn", "reject"]
# A missing value of a categorical feature that takes one (a native categorical split routes it; an imputer or an
# encoder with a missing category in a scikit-learn pipeline): null, "" or an absent record key in a request, "" in
# the model input (an empty CSV field is missing to pandas as well).
MISSING_CATEGORY = ""
_NUMERIC_KINDS = "fiub"  # float, int, unsigned, bool (JSON true/false are read as 1/0)
_MAX_MESSAGES = 10


@dataclass(frozen=True, slots=True)
class TabularBatch:
    """Rows of a model with categorical features: numeric and string columns, in manifest order."""

    numeric: np.ndarray | None
    categorical: np.ndarray

    def __len__(self) -> int:
        return self.categorical.shape[0]


ModelInput = np.ndarray | TabularBatch


class FeatureSchema:
    """The model's features, their order, kinds, dtype and training ranges."""

    def __init__(self, manifest: Manifest, dtype: np.dtype[Any]) -> None:
        features = manifest.features
        self.names = manifest.feature_names
        self.count = len(self.names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.name_set = frozenset(self.names)
        self.dtype = np.dtype(dtype)
        self.numeric_cols = [i for i, f in enumerate(features) if f.kind == "numeric"]
        self.categorical_cols = [i for i, f in enumerate(features) if f.kind == "categorical"]
        self.categories = {i: frozenset(features[i].categories or ()) for i in self.categorical_cols
                           if features[i].handle_unknown == "error" and features[i].categories}
        self.missing_categories = frozenset(i for i in self.categorical_cols if features[i].allow_missing)
        numeric = [features[i] for i in self.numeric_cols]
        self.allow_missing = np.array([f.allow_missing for f in numeric], dtype=bool)
        self.any_missing_allowed = bool(self.allow_missing.any())
        self.has_ranges = bool(numeric) and all(f.stats is not None for f in numeric)
        # Bounds rounded like the inputs are (float32 models): a training value stays inside its range.
        self.mins = np.array([f.stats.min if f.stats else -np.inf for f in numeric]).astype(self.dtype)
        self.maxs = np.array([f.stats.max if f.stats else np.inf for f in numeric]).astype(self.dtype)
        self._lows, self._highs = self.mins.tolist(), self.maxs.tolist()  # one row's fast check
        # Rows of numbers become a float64 input directly (float32 inputs take the checked conversion: a finite
        # double may overflow a float)
        self._plain_rows = not self.categorical_cols and self.dtype == np.float64

    def describe(self, col: int) -> str:
        return f"feature {self.names[col]!r} (column {col})"

    # -- building the input -------------------------------------------------------------------------

    def row(self, data: Any) -> ModelInput:
        """One row as a flat list of values -> the model input for 1 row."""
        if not isinstance(data, list):
            raise InvalidInput(
                f"'data' must be a list of {self.count} values, one per feature ({self._list_names()}); "
                f"got {type(data).__name__}",
            )
        if self.categorical_cols:
            if len(data) == 1 and isinstance(data[0], list):
                data = data[0]
            self._check_shape(data, None)
            return self._mixed([data], single=True)
        plain = self._plain(data)
        if plain is not None:
            return plain
        try:
            arr = np.array(data)
        except ValueError:
            arr = np.empty(0, dtype=object)
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1 or arr.dtype.kind not in _NUMERIC_KINDS or arr.shape[0] != self.count:
            self._check_shape(data, None)
            arr = self._explained_values([data], single=True)[0]
        return self.as_input(arr.reshape(1, -1), single=True)

    def _plain(self, data: list[Any]) -> np.ndarray | None:
        """The usual row, numbers only, as the float64 input; None: check it the long way. Their sum is finite
        only when each is a finite number (None, text or a list raise TypeError, NaN and infinities make it
        non-finite; an overflowing sum only takes the long way). One C call then builds the input: no numpy
        set-up per check (~25% of decoding)."""
        if self._plain_rows and len(data) == self.count:
            try:
                if isfinite(sum(data)):
                    return np.array([data], dtype=np.float64)
            except (TypeError, OverflowError):
                pass
        return None

    def plain_row(self, data: list[Any], policy: RangePolicy) -> tuple[np.ndarray, list[str]] | None:
        """``row(data)`` and its range warnings, for a row of plain numbers (the one-row hot path: the range
        check runs on the Python values); None when ``data`` needs the long way (``row``, ``check_ranges``)."""
        x = self._plain(data)
        if x is None:
            return None
        if (policy == "off" or not self.has_ranges
                or (all(map(le, self._lows, data)) and all(map(le, data, self._highs)))):
            return x, []
        return x, self.check_ranges(x, policy, single=True)

    def rows(self, data: Any, *, max_rows: int) -> ModelInput:
        """A list of rows (lists of values in feature order) -> the model input."""
        self._check_row_count(data, "data", max_rows)
        if self.categorical_cols:
            for i, r in enumerate(data):
                self._check_shape(r, i)
            return self._mixed(data, single=False)
        try:
            arr = np.array(data)
        except ValueError:  # ragged
            arr = np.empty(0, dtype=object)
        if arr.ndim != 2 or arr.dtype.kind not in _NUMERIC_KINDS or arr.shape[1] != self.count:
            for i, r in enumerate(data):
                self._check_shape(r, i)
            arr = self._explained_values(data, single=False)
        return self.as_input(arr, single=False)

    def records(self, records: Any, *, max_rows: int) -> ModelInput:
        """A list of ``{feature: value}`` objects -> the model input, columns in model order."""
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
                self._explain_keys(rec, i)  # unless only keys of features that take a missing value are absent
            rows.append([rec.get(n) for n in names])
        return self.rows(rows, max_rows=max_rows)

    def as_input(self, arr: np.ndarray, *, single: bool, cols: list[int] | None = None) -> np.ndarray:
        """A numeric array of the input dtype, every value finite (NaN only where the model takes it)."""
        if arr.dtype == self.dtype:
            out = np.ascontiguousarray(arr)
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by feature
                out = np.ascontiguousarray(arr, dtype=self.dtype)
        finite = np.isfinite(out)
        if not finite.all():
            if self.any_missing_allowed:
                finite |= np.isnan(out) & self.allow_missing
            if not finite.all():
                r, c = (int(x) for x in np.argwhere(~finite)[0])
                self._raise_not_finite(float(arr[r, c]), r, c if cols is None else cols[c], single)
        return out

    def _raise_not_finite(self, original: float, r: int, col: int, single: bool) -> None:
        what = (f"{original!r} is outside the {self.dtype.name} range of the model input" if np.isfinite(original)
                else f"{original!r} is not a finite number")
        raise InvalidInput(f"{self._where(r, col, single)}: {what}; finite numbers are required",
                           row=None if single else r, feature=self.names[col])

    def _mixed(self, rows: list[list[Any]], *, single: bool) -> TabularBatch:
        numeric = None
        if self.numeric_cols:
            num_rows = [[r[c] for c in self.numeric_cols] for r in rows]
            try:
                arr = np.array(num_rows)
            except ValueError:
                arr = np.empty(0, dtype=object)
            if arr.dtype.kind not in _NUMERIC_KINDS:
                arr = self._explained_values(rows, single=single, cols=self.numeric_cols)
            numeric = self.as_input(arr, single=single, cols=self.numeric_cols)
        cat = np.empty((len(rows), len(self.categorical_cols)), dtype=object)
        for i, r in enumerate(rows):
            for j, c in enumerate(self.categorical_cols):
                v = r[c]
                if (v is None or v == MISSING_CATEGORY) and c in self.missing_categories:
                    cat[i, j] = MISSING_CATEGORY
                    continue
                if v is None:
                    raise InvalidInput(f"{self._where(i, c, single)}: the value is null; this categorical feature "
                                       "needs a value (the model does not take missing values here), a string"
                                       f"{self._examples(c)}", row=None if single else i, feature=self.names[c])
                if not isinstance(v, str):
                    raise InvalidInput(f"{self._where(i, c, single)}: {quoted(v)} is not a string; this categorical "
                                       f"feature takes strings{self._examples(c)}",
                                       row=None if single else i, feature=self.names[c])
                known = self.categories.get(c)
                if known is not None and v not in known:
                    raise InvalidInput(f"{self._where(i, c, single)}: unknown category {quoted(v)}; the model knows "
                                       f"only{self._examples(c, 20)}", row=None if single else i,
                                       feature=self.names[c])
                cat[i, j] = v
        return TabularBatch(numeric, cat)

    def _examples(self, col: int, limit: int = 5) -> str:
        known = sorted(self.categories.get(col, ()))
        if not known:
            return ""
        shown = ", ".join(map(repr, known[:limit]))
        return f" {shown}" + (f", ... ({len(known)} in all)" if len(known) > limit else "")

    def _explained_values(self, rows: list[Any], *, single: bool, cols: list[int] | None = None) -> np.ndarray:
        """Numbers from rows numpy could not convert: name the first bad value, or convert valid oddities
        (integers too large for int64) by hand."""
        cols = cols if cols is not None else list(range(self.count))
        missing_ok = dict(zip(self.numeric_cols, self.allow_missing.tolist(), strict=True))
        out = np.empty((len(rows), len(cols)), dtype=np.float64)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                v = r[c]
                if v is None and missing_ok.get(c):
                    out[i, j] = np.nan
                    continue
                problem = value_problem(v)
                if problem:
                    raise InvalidInput(f"{self._where(None if single else i, c, single)}: {problem}",
                                       row=None if single else i, feature=self.names[c])
                out[i, j] = float(v)
        return out

    # -- explaining what is wrong -------------------------------------------------------------------

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

    def _where(self, row: int | None, col: int, single: bool = False) -> str:
        return self.describe(col) if single or row is None else f"row {row}, {self.describe(col)}"

    def _list_names(self) -> str:
        shown = ", ".join(self.names[:8])
        return shown + (f", ... ({self.count} in all)" if self.count > 8 else "")

    def _check_shape(self, row: Any, i: int | None) -> None:
        prefix = "" if i is None else f"row {i}: "
        if not isinstance(row, list):
            raise InvalidInput(f"{prefix}a row must be a list of {self.count} values; got {type(row).__name__}",
                               row=i)
        if len(row) != self.count:
            raise InvalidInput(
                f"{prefix}got {len(row)} values but the model expects {self.count} features "
                f"({self._list_names()})",
                row=i, limit=self.count,
            )

    def _explain_keys(self, rec: dict[str, Any], i: int) -> None:
        missing = [n for n in self.names if n not in rec]
        unknown = sorted(k for k in rec if k not in self.index)
        if not unknown and all(self.index[n] in self.missing_categories for n in missing):
            return  # an absent key of a text feature that takes a missing value reads as null
        parts = []
        if missing:
            parts.append(f"missing feature(s) {', '.join(map(repr, missing))}")
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            parts.append(f"unknown feature(s) {', '.join(map(quoted, unknown[:5]))}{more}")
        raise InvalidInput(
            f"row {i}: {' and '.join(parts)}; the model expects exactly: {self._list_names()}",
            row=i, feature=(missing or unknown)[0],
        )

    # -- ranges -------------------------------------------------------------------------------------

    def check_ranges(self, x: ModelInput, policy: RangePolicy, *, single: bool) -> list[str]:
        """Values outside the training min/max: warnings (``warn``), an error (``reject``) or nothing."""
        arr = x.numeric if isinstance(x, TabularBatch) else x
        if policy == "off" or not self.has_ranges or arr is None:
            return []
        if arr.shape[0] == 1:
            # One row: Python floats compared by C functions beat numpy's set-up (errstate, any) on a few values.
            # A NaN compares False and takes the path below, where it is never out of range.
            row = arr[0].tolist()
            if all(map(le, self._lows, row)) and all(map(le, row, self._highs)):
                return []
        with np.errstate(invalid="ignore"):  # NaN (a missing value) is never out of range
            low = arr < self.mins
            high = arr > self.maxs
        if not (low.any() or high.any()):
            return []
        messages = []
        bad = np.argwhere(low | high)
        for r, c in bad[:_MAX_MESSAGES]:
            r, c = int(r), int(c)
            col = self.numeric_cols[c]
            side = f"below the training minimum {self.mins[c]:.6g}" if low[r, c] else (
                f"above the training maximum {self.maxs[c]:.6g}")
            messages.append(f"{self._where(r, col, single)}: value {float(arr[r, c]):.6g} is {side}")
        if len(bad) > _MAX_MESSAGES:
            messages.append(f"... and {len(bad) - _MAX_MESSAGES} more value(s) outside the training range")
        if policy == "reject":
            r, c = (int(x) for x in bad[0])
            raise InvalidInput(messages[0] + " (range policy is 'reject')", row=None if single else r,
                               feature=self.names[self.numeric_cols[c]])
        return messages
