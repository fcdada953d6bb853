"""Does the ONNX graph reproduce the model? Compare both, row by row, on the holdout and adversarial rows.

``export_verified`` is the whole step for any fitted model (``tabserve train`` and ``tabserve import``):
export, score the same rows with the model and with onnxruntime, and refuse the export unless every
number is within ``atol + rtol * |expected|`` and every label is equal.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.base import is_classifier, is_outlier_detector

from tabserve.core.manifest import Feature, Task
from tabserve.core.schema import MISSING_CATEGORY
from tabserve.errors import ExportError
from tabserve.training.adversarial import AdversarialRows, adversarial_rows
from tabserve.training.estimators import model_input
from tabserve.training.export import ExportedModel, export_onnx
from tabserve.training.options import ADVERSARIAL_ROWS, ATOL, RTOL
from tabserve.training.rows import SHOWN
from tabserve.training.tensor_check import TensorCheck, check_tensor

# Floor of the relative difference's denominator, so that an exact 0 compared with 0 counts as 0.
TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True, slots=True)
class Outputs:
    """What a model says for N rows: values (regression) or labels, and class probabilities (none for a
    ``labels_only`` classifier such as RidgeClassifier: its labels alone are compared). An anomaly detector's
    -1/1 labels come with ``score_samples`` and ``decision_function`` as ``probabilities`` ``[N, 2]``."""

    values: np.ndarray
    probabilities: np.ndarray | None = None
    labels_only: bool = False

    @property
    def numbers(self) -> np.ndarray:
        """The numbers compared: probabilities for a classifier, values for a regressor, as (N, k) float64."""
        if self.labels_only:
            return np.zeros((len(self.values), 0))
        numbers = self.probabilities if self.probabilities is not None else self.values
        return np.asarray(numbers, dtype=np.float64).reshape(len(self.values), -1)

    def head(self, n: int) -> Outputs:
        return Outputs(self.values[:n], None if self.probabilities is None else self.probabilities[:n],
                       self.labels_only)


@dataclass(frozen=True, slots=True)
class Parity:
    rows_checked: int
    max_abs_diff: float
    max_rel_diff: float
    rtol: float
    atol: float
    rows_over_tolerance: int
    label_mismatches: int
    worst_rows: list[int]  # holdout row numbers among the worst rows, largest difference first
    worst_details: list[str]  # the worst rows (holdout or adversarial) with their values
    adversarial_rows: int = 0  # of rows_checked
    probes: dict[str, int] = field(default_factory=dict)  # adversarial probes per kind, before sampling
    tensor: TensorCheck | None = field(default=None, compare=False, repr=False)  # model.tensor.onnx, checked

    @property
    def passed(self) -> bool:
        return self.rows_over_tolerance == 0 and self.label_mismatches == 0

    @property
    def checked_on(self) -> str:
        return "holdout+adversarial" if self.adversarial_rows else "holdout"

    def manifest(self) -> dict[str, Any]:
        out = {
            "checked_on": self.checked_on, "rows_checked": self.rows_checked,
            "adversarial_rows": self.adversarial_rows, "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff, "rtol": self.rtol, "atol": self.atol, "passed": self.passed,
            "label_mismatches": self.label_mismatches, "worst_rows": self.worst_rows,
        }
        if self.probes:
            out["probes"] = self.probes
        return out

    def require(self) -> None:
        """Raise ``ExportError`` unless every row is within tolerance and every label agrees."""
        if self.passed:
            return
        labels = f", {self.label_mismatches} predicted label(s) differ" if self.label_mismatches else ""
        rows = f"{self.rows_checked} rows"
        if self.adversarial_rows:
            holdout = self.rows_checked - self.adversarial_rows
            rows += f" ({holdout} holdout, {self.adversarial_rows} adversarial)"
        raise ExportError(
            f"the ONNX export does not reproduce the model: {self.rows_over_tolerance} of {rows} differ by "
            f"more than atol + rtol*|expected| (rtol={self.rtol:g}, atol={self.atol:g}){labels}; max abs "
            f"diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}. Worst rows (numbered from 0 "
            f"in the data): {'; '.join(self.worst_details)}. Nothing was written. If these differences are "
            "acceptable, loosen --rtol/--atol; otherwise try another --estimator",
            row=self.worst_rows[0] if self.worst_rows else None,
        )


@dataclass(frozen=True, slots=True)
class Verified:
    """An export that reproduces its model: what ``describe.build_manifest`` needs, and the model's own
    holdout outputs (for the metrics)."""

    exported: ExportedModel
    parity: Parity
    expected: Outputs  # the source model's outputs on the holdout rows


def export_verified(model: Any, features: Sequence[Feature], task: Task, holdout: pd.DataFrame,
                    holdout_ids: Sequence[int] | np.ndarray, *, rtol: float = RTOL, atol: float = ATOL,
                    adversarial: int = ADVERSARIAL_ROWS) -> Verified:
    """Export a fitted model, check it on the holdout plus up to ``adversarial`` adversarial rows, and
    raise ``ExportError`` (with the worst rows) unless it reproduces the model within tolerance.

    ``holdout``: a DataFrame with the feature columns (numeric as numbers, NaN for a missing value;
    categorical as str); ``holdout_ids``: each row's number in the source, for messages.
    """
    exported = export_onnx(model, features, task)
    parity, expected = check(model, exported, features, holdout, holdout_ids, rtol=rtol, atol=atol,
                             adversarial=adversarial)
    parity.require()
    return Verified(exported, parity, expected)


def check(model: Any, exported: ExportedModel, features: Sequence[Feature], holdout: pd.DataFrame,
          holdout_ids: Sequence[int] | np.ndarray, *, rtol: float = RTOL, atol: float = ATOL,
          adversarial: int = ADVERSARIAL_ROWS, extremes: bool = False) -> tuple[Parity, Outputs]:
    """The parity of ``exported`` with ``model``, and the model's outputs on the holdout rows
    (``extremes``: adversarial rows at and beyond each feature's range too, ``adversarial_rows``)."""
    ids = [int(i) for i in holdout_ids]
    extra = (adversarial_rows(model, features, holdout, ids, limit=adversarial, extremes=extremes) if adversarial
             else AdversarialRows(holdout.iloc[:0], []))
    names = [f.name for f in features]
    rows = pd.concat([holdout[names], extra.rows], ignore_index=True) if len(extra) else holdout[names]
    expected = source_outputs(model, rows)
    actual = onnx_outputs(exported, rows, features)
    parity = compare(expected, actual, [*ids, *extra.descriptions], rtol=rtol, atol=atol)
    parity = replace(parity, adversarial_rows=len(extra), probes=extra.counts)
    if parity.passed:  # the GPU graph of a tree model, on the same rows (training/tensor_check.py)
        parity = replace(parity, tensor=check_tensor(exported, rows, features, expected,
                                                     [*ids, *extra.descriptions], parity))
    return parity, expected.head(len(holdout))


def source_outputs(model: Any, rows: pd.DataFrame) -> Outputs:
    """The model's ``predict`` (and ``predict_proba``) on ``rows``, as it was fitted to take them."""
    X = model_input(model, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. "unknown categories encoded as zeros": intended
        try:
            values = model.predict(X)
            if _is_anomaly_detector(model):  # compared as a labelled model's probabilities are
                return Outputs(np.asarray(values), np.stack([model.score_samples(X), model.decision_function(X)],
                                                            axis=1))
            proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
        except ValueError as exc:
            raise ExportError(f"the model itself fails on the parity rows: {exc}; check the features' "
                              "categories, handle_unknown and allow_missing") from exc
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:  # CatBoostClassifier's labels for several classes: [N, 1]
        values = values.reshape(-1)
    return Outputs(values, None if proba is None else np.asarray(proba),
                   labels_only=proba is None and _is_classifier(model))


def _is_anomaly_detector(model: Any) -> bool:
    try:
        return is_outlier_detector(model)
    except AttributeError:
        return False


def _is_classifier(model: Any) -> bool:
    """scikit-learn's ``is_classifier``; False for an object outside its API (a native booster's wrapper)."""
    try:
        return is_classifier(model)
    except AttributeError:
        return False


def onnx_outputs(exported: ExportedModel, rows: pd.DataFrame, features: Sequence[Feature]) -> Outputs:
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    feeds = exported.feeds
    dtype = np.dtype(exported.input["dtype"]) if exported.input else np.dtype(np.float64)
    feed = {}
    for kind, name in feeds.items():
        cols = [f.name for f in features if f.kind == kind]
        if kind == "categorical":  # a missing text value (NaN, None) is sent as the server sends null
            feed[name] = rows[cols].astype(object).fillna(MISSING_CATEGORY).to_numpy(dtype=object)
        else:
            feed[name] = rows[cols].to_numpy(dtype=dtype)
    names = [o["name"] for o in exported.outputs]
    by_role = dict(zip((o["role"] for o in exported.outputs), session.run(names, feed), strict=True))
    if "score" in by_role:  # an anomaly model: label, then score_samples and decision_function
        return Outputs(by_role["label"].reshape(-1), np.stack([by_role["score"], by_role["decision"]], axis=1))
    if "label" in by_role:
        return Outputs(by_role["label"].reshape(-1), by_role.get("probabilities"),
                       labels_only="probabilities" not in by_role)
    return Outputs(by_role["prediction"].reshape(-1))


def compare(expected: Outputs, actual: Outputs, rows: Sequence[int | str] | np.ndarray, *, rtol: float,
            atol: float) -> Parity:
    """Element-wise ``|actual - expected| <= atol + rtol * |expected|`` (as np.allclose), and equal labels.

    ``rows`` names each row: an int is a holdout row's number in the source, a str describes an
    adversarial row."""
    b, a = expected.numbers, actual.numbers
    diff = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    over = diff > atol + rtol * np.abs(np.nan_to_num(b))  # NaN against a number: diff inf, over
    labelled = expected.probabilities is not None or expected.labels_only
    mismatched = (np.asarray(actual.values) != np.asarray(expected.values)) if labelled \
        else np.zeros(len(b), dtype=bool)
    row_diff = diff.max(axis=1, initial=0.0)
    score = np.where(mismatched, np.inf, row_diff)
    worst = [int(i) for i in np.argsort(-score, kind="stable")[:SHOWN] if score[i] > 0]
    labels = list(rows)
    with np.errstate(invalid="ignore"):
        rel = diff / np.maximum(np.abs(b), TINY)
    return Parity(
        rows_checked=len(b),
        max_abs_diff=float(diff.max(initial=0.0)),
        max_rel_diff=float(np.nan_to_num(rel, nan=0.0).max(initial=0.0)),
        rtol=rtol,
        atol=atol,
        rows_over_tolerance=int(over.any(axis=1).sum()),
        label_mismatches=int(mismatched.sum()),
        worst_rows=[int(labels[i]) for i in worst if not isinstance(labels[i], str)],
        worst_details=[_detail(i, labels[i], expected, actual, row_diff[i]) for i in worst],
    )


def _detail(i: int, row: int | str, expected: Outputs, actual: Outputs, diff: float) -> str:
    where = f"row {int(row)}" if not isinstance(row, str) else f"adversarial row: {row}"
    if expected.labels_only:
        return f"{where}: expected {_label(expected.values[i])!r}, onnx {_label(actual.values[i])!r}"
    if expected.probabilities is None:
        return (f"{where}: expected {float(expected.numbers[i, 0])!r}, onnx {float(actual.numbers[i, 0])!r} "
                f"(diff {diff:.3g})")
    return (f"{where}: expected {_label(expected.values[i])!r} {_probs(expected.numbers[i])}, "
            f"onnx {_label(actual.values[i])!r} {_probs(actual.numbers[i])} (diff {diff:.3g})")


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _probs(p: np.ndarray) -> str:
    return "p=[" + ", ".join(f"{v!r}" for v in p.tolist()) + "]"
