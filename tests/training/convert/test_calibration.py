"""CalibratedClassifierCV: sigmoid and isotonic, every cv mode (k folds with ensemble True or False, a frozen
prefit estimator), bases read through decision_function or predict_proba; probabilities within 1e-9 relative
of scikit-learn's and identical labels, on held-out rows, random rows and rows at the base's split thresholds.

Held out: an isotonic calibrator's breakpoints are the scores of its calibration rows; a score computed an
ulp away from scikit-learn's (a dot product, a multi-threaded tree sum) lands on the other side of such a
breakpoint, where a probability of exactly 0 becomes ~1e-17. Rows not used in fit rarely sit on one, but a
tree ensemble gives many rows the same score: the graph runs on one thread, as the server does by default
(``intra_op_threads=1``), where onnxruntime adds a booster's trees in scikit-learn's order, bit for bit.
GaussianNB's probabilities pile up next to 0 and 1, where isotonic breakpoints 1e-15 apart make slopes that
turn its last-bit differences into 3e-9: the isotonic cases use the other bases."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tabserve.training.convert import FeatureSpec, export_exact
from tests.training.convert.conftest import _check_rows

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)

BASES = {  # decision_function: logistic, linear_svc, ridge, boosting; predict_proba: forest, bayes
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    "linear_svc": lambda: make_pipeline(StandardScaler(), LinearSVC(random_state=0)),
    "ridge": RidgeClassifier,
    "boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0),
    "hist_boosting": lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1),
    "bayes": GaussianNB,
}


def _split(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, held_out, y, _ = train_test_split(data.X, data.y, test_size=0.3, random_state=0, stratify=data.y)
    return X, y, held_out


def _exact_on_one_thread(model, rows: np.ndarray) -> None:
    exported = export_exact(model, [FeatureSpec(f"f{i}") for i in range(rows.shape[1])], "classification")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(exported.onnx_bytes, options, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"X": rows})
    expected = model.predict_proba(rows)
    error = np.abs(probabilities - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    assert error.max() <= 1e-9, f"max relative error {error.max():.3g}"
    np.testing.assert_array_equal(labels.astype(object), model.predict(rows))


CASES = [(base, method) for base in BASES for method in ("sigmoid", "isotonic")
         if (base, method) != ("bayes", "isotonic")]


@pytest.mark.parametrize("ensemble", [True, False], ids=["ensemble", "one_estimator"])
@pytest.mark.parametrize(("base", "method"), CASES)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_calibrated_classifier(dataset, base, method, ensemble, request):
    X, y, held_out = _split(request.getfixturevalue(dataset))
    y = np.array(["low", "mid", "high"], dtype=object)[y]
    model = CalibratedClassifierCV(BASES[base](), method=method, cv=3, ensemble=ensemble).fit(X, y)
    _exact_on_one_thread(model, _check_rows(model, held_out))


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris"])
def test_a_frozen_prefit_estimator(dataset, method, request, exact):
    X, y, held_out = _split(request.getfixturevalue(dataset))
    half = len(X) // 2
    base = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X[:half], y[:half])
    model = CalibratedClassifierCV(FrozenEstimator(base), method=method).fit(X[half:], y[half:])
    exact(model, held_out, "classification")
