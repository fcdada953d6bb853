"""Fixtures for the tree converter tests: sklearn's datasets and an exactness check through onnxruntime.

Exactness: every output value ``a`` of the graph and the model's ``b`` satisfy
``|a - b| <= 1e-9 * max(|b|, tiny)`` (relative to the model's value, ``tiny`` the smallest normal
double, so a zero must come out as zero), and the labels are identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from tabserve.training.convert import FeatureSpec, export_exact
from tabserve.training.convert.registry import lookup

REL = 1e-9
TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class Data:
    X: np.ndarray
    y: np.ndarray
    task: str  # "regression" or "classification"


@pytest.fixture(scope="session")
def diabetes() -> Data:
    X, y = load_diabetes(return_X_y=True)
    return Data(X, y, "regression")


@pytest.fixture(scope="session")
def breast_cancer() -> Data:
    X, y = load_breast_cancer(return_X_y=True)
    return Data(X[:, :10], y, "classification")


@pytest.fixture(scope="session")
def iris() -> Data:
    X, y = load_iris(return_X_y=True)
    return Data(X, y, "classification")


def _with_nan(X: np.ndarray, fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return X


@pytest.fixture
def with_nan() -> Callable[..., np.ndarray]:
    """``with_nan(X, fraction=0.15, seed=0)``: a copy of ``X`` with that fraction of cells NaN."""
    return _with_nan


@pytest.fixture
def run() -> Callable[[Any, np.ndarray, str], list[np.ndarray]]:
    """``run(model, X, task)``: export ``model`` exactly and run the graph on ``X`` with onnxruntime."""
    return _run_exported


def _run_exported(model: Any, X: np.ndarray, task: str) -> list[np.ndarray]:
    features = [FeatureSpec(f"f{i}") for i in range(X.shape[1])]
    exported = export_exact(model, features, task)  # type: ignore[arg-type]
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"X": np.ascontiguousarray(X, dtype=np.float64)})


def _probe_rows(model: Any, X: np.ndarray, limit: int = 1500) -> np.ndarray:
    """Rows of ``X`` with one feature set at a split threshold ``t`` of ``model``, or one double or one
    float32 step to either side of ``t`` or of ``float32(t)``."""
    found = lookup(model).thresholds(model)  # type: ignore[misc]
    probes = []
    for column, ts in found.items():
        t = np.asarray(ts, dtype=np.float64)
        t = t[np.isfinite(t)]
        with np.errstate(over="ignore"):
            t32 = t.astype(np.float32)
        for v in (t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), t32.astype(np.float64),
                  np.nextafter(t32, np.float32(-np.inf)).astype(np.float64),
                  np.nextafter(t32, np.float32(np.inf)).astype(np.float64)):
            probes += [(column, value) for value in v]
    rng = np.random.default_rng(0)
    if len(probes) > limit:
        probes = [probes[i] for i in rng.choice(len(probes), limit, replace=False)]
    rows = X[rng.integers(0, len(X), len(probes))].copy()
    for k, (column, value) in enumerate(probes):
        rows[k, column] = value
    return rows


def _check_rows(model: Any, X: np.ndarray) -> np.ndarray:
    """Data rows, random rows in the data's range, and threshold probes."""
    rng = np.random.default_rng(1)
    lo, hi = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    spread = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), size=(200, X.shape[1]))
    return np.vstack([X[:300], spread, _probe_rows(model, X)])


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = np.abs(actual - expected) / np.maximum(np.abs(expected), TINY)
    worst = float(np.max(error, initial=0.0))
    row = int(np.unravel_index(np.argmax(error), error.shape)[0]) if error.size else 0
    assert worst <= REL, f"{what}: max relative error {worst:.3g} at row {row}"
    return worst


Check = Callable[..., float]


@pytest.fixture
def exact() -> Check:
    """``exact(model, X, task, predict=None, predict_proba=None)``: the export's outputs on ``X`` (plus
    random and threshold rows when ``probe``) against the model's; returns the max relative error."""

    def check(model: Any, X: np.ndarray, task: str, *, predict: Callable[[np.ndarray], Any] | None = None,
              predict_proba: Callable[[np.ndarray], Any] | None = None, probe: bool = True) -> float:
        rows = _check_rows(model, X) if probe else X
        outputs = _run_exported(model, rows, task)
        predict = predict or model.predict
        if task == "regression":
            return _assert_close(outputs[0], np.asarray(predict(rows)).reshape(-1), "prediction")
        labels, probabilities = outputs
        worst = _assert_close(probabilities, (predict_proba or model.predict_proba)(rows), "probabilities")
        expected_labels = np.asarray(predict(rows))
        mismatched = np.flatnonzero(labels.astype(expected_labels.dtype) != expected_labels)
        assert mismatched.size == 0, f"labels differ on {mismatched.size} rows, first {mismatched[:5]}"
        return worst

    return check
