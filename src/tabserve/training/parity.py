"""Does the ONNX graph reproduce the sklearn pipeline? Compare both on the holdout rows, row by row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.pipeline import Pipeline

from tabserve.errors import ExportError
from tabserve.training.export import ExportedModel
from tabserve.training.rows import SHOWN

# Floor of the relative difference's denominator: the smallest normal float32 (the ONNX outputs' type).
TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True, slots=True)
class Outputs:
    """What a model says for N rows: values (regression) or labels, and class probabilities."""

    values: np.ndarray
    probabilities: np.ndarray | None = None

    @property
    def numbers(self) -> np.ndarray:
        """The numbers compared: probabilities for a classifier, values for a regressor, as (N, k) float64."""
        numbers = self.probabilities if self.probabilities is not None else self.values
        return np.asarray(numbers, dtype=np.float64).reshape(len(self.values), -1)


@dataclass(frozen=True, slots=True)
class Parity:
    rows_checked: int
    max_abs_diff: float
    max_rel_diff: float
    rtol: float
    atol: float
    rows_over_tolerance: int
    label_mismatches: int
    worst_rows: list[int]  # source row numbers, largest difference first (label mismatches before all)
    worst_details: list[str]

    @property
    def passed(self) -> bool:
        return self.rows_over_tolerance == 0 and self.label_mismatches == 0

    def manifest(self) -> dict[str, Any]:
        return {
            "checked_on": "holdout", "rows_checked": self.rows_checked, "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff, "rtol": self.rtol, "atol": self.atol, "passed": self.passed,
            "label_mismatches": self.label_mismatches, "worst_rows": self.worst_rows,
        }

    def require(self) -> None:
        """Raise ``ExportError`` unless every row is within tolerance and every label agrees."""
        if self.passed:
            return
        labels = f", {self.label_mismatches} predicted label(s) differ" if self.label_mismatches else ""
        raise ExportError(
            f"the ONNX export does not reproduce the model on the holdout: {self.rows_over_tolerance} of "
            f"{self.rows_checked} rows differ by more than atol + rtol*|expected| (rtol={self.rtol:g}, "
            f"atol={self.atol:g}){labels}; max abs diff {self.max_abs_diff:.3g}, max rel diff "
            f"{self.max_rel_diff:.3g}. Worst rows (numbered from 0 in the data): "
            f"{'; '.join(self.worst_details)}. Nothing was written. If these differences are acceptable, "
            "loosen --rtol/--atol; otherwise try another --estimator",
            row=self.worst_rows[0] if self.worst_rows else None,
        )


def sklearn_outputs(pipeline: Pipeline, X: np.ndarray) -> Outputs:
    values = pipeline.predict(X)
    proba = pipeline.predict_proba(X) if hasattr(pipeline, "predict_proba") else None
    return Outputs(values, proba)


def onnx_outputs(exported: ExportedModel, X: np.ndarray) -> Outputs:
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o["name"] for o in exported.outputs]
    by_role = dict(zip((o["role"] for o in exported.outputs), session.run(names, {exported.input["name"]: X}),
                       strict=True))
    if "label" in by_role:
        return Outputs(by_role["label"].reshape(-1), by_role["probabilities"])
    return Outputs(by_role["prediction"].reshape(-1))


def compare(expected: Outputs, actual: Outputs, row_ids: np.ndarray, *, rtol: float, atol: float) -> Parity:
    """Element-wise ``|actual - expected| <= atol + rtol * |expected|`` (as np.allclose), and equal labels."""
    b, a = expected.numbers, actual.numbers
    diff = np.abs(a - b)
    over = diff > atol + rtol * np.abs(b)
    is_classifier = expected.probabilities is not None
    mismatched = (np.asarray(actual.values) != np.asarray(expected.values)) if is_classifier \
        else np.zeros(len(b), dtype=bool)
    row_diff = diff.max(axis=1)
    score = np.where(mismatched, np.inf, row_diff)
    worst = [int(i) for i in np.argsort(-score, kind="stable")[:SHOWN] if score[i] > 0]
    return Parity(
        rows_checked=len(b),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff / np.maximum(np.abs(b), TINY)).max()),
        rtol=rtol,
        atol=atol,
        rows_over_tolerance=int(over.any(axis=1).sum()),
        label_mismatches=int(mismatched.sum()),
        worst_rows=[int(row_ids[i]) for i in worst],
        worst_details=[_detail(i, int(row_ids[i]), expected, actual, row_diff[i]) for i in worst],
    )


def _detail(i: int, row: int, expected: Outputs, actual: Outputs, diff: float) -> str:
    if expected.probabilities is None:
        return (f"row {row}: sklearn {expected.numbers[i, 0]:.9g}, onnx {actual.numbers[i, 0]:.9g} "
                f"(diff {diff:.3g})")
    return (f"row {row}: sklearn {_label(expected.values[i])!r} {_probs(expected.numbers[i])}, "
            f"onnx {_label(actual.values[i])!r} {_probs(actual.numbers[i])} (diff {diff:.3g})")


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _probs(p: np.ndarray) -> str:
    return "p=[" + ", ".join(f"{v:.6g}" for v in p) + "]"
