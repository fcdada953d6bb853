"""Nearest neighbours and centroids: scikit-learn's neighbours, weights and ties, within 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.errors import ExportError
from tabserve.training.export import export_onnx

LOADERS = [load_breast_cancer, load_iris, load_wine]
# (algorithm, weights, p): every search with the distances it computes; brute + distance + p=2 is refused
SEARCHES = [(a, w, p) for a in ("brute", "kd_tree", "ball_tree", "auto") for w in ("uniform", "distance")
            for p in (2, 1) if not (a in ("brute", "auto") and w == "distance" and p == 2)]


def _rows(X: np.ndarray) -> np.ndarray:
    """Training rows themselves (distance 0), random rows in the range, rows a little outside."""
    rng = np.random.default_rng(0)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return np.vstack([X[::3], rng.uniform(lo, hi, size=(300, X.shape[1])), X[:100] * 1.1])


@pytest.mark.parametrize(("algorithm", "weights", "p"), SEARCHES)
@pytest.mark.parametrize("k", [5, 12])
def test_regressor(algorithm, weights, p, k, exact):
    X, y = load_diabetes(return_X_y=True)
    regressor = KNeighborsRegressor(n_neighbors=k, weights=weights, algorithm=algorithm, p=p)
    model = make_pipeline(StandardScaler(), regressor).fit(X, y)
    exact(model, _rows(X), "regression", probe=False)


@pytest.mark.parametrize(("algorithm", "weights", "p"), SEARCHES)
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
def test_classifier(algorithm, weights, p, loader, exact):
    X, y = loader(return_X_y=True)
    if loader is load_breast_cancer:
        y = np.array([3, 8])[y]  # (string labels break scikit-learn 1.6's own brute predict_proba)
    classifier = KNeighborsClassifier(n_neighbors=9, weights=weights, algorithm=algorithm, p=p)
    model = make_pipeline(StandardScaler(), classifier).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


@pytest.mark.parametrize("k", [9, 130, 300])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_sums_over_many_neighbours_add_as_numpy_bit_for_bit(k, weights, run):
    """numpy adds 8 running sums from 8 terms on and splits beyond 128: the graph does the same."""
    X, y = load_diabetes(return_X_y=True)
    model = KNeighborsRegressor(n_neighbors=k, weights=weights, algorithm="kd_tree").fit(X, y)
    rows = _rows(X)
    np.testing.assert_array_equal(run(model, rows, "regression")[0], model.predict(rows))


def test_equal_distances_keep_the_first_training_row_and_the_first_class(run):
    """Duplicated training rows with different classes at the k-th distance: scikit-learn keeps the row it
    saw first, and a tie in the counts goes to the first class."""
    X = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    y = np.array([0, 2, 1, 1, 2, 0])
    rows = np.array([[0.0, 0.0], [0.2, 0.2], [0.5, 0.5], [1.0, 0.0], [3.0, 3.0]])
    for k in (1, 2, 3, 4):
        model = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X, y)
        labels, probabilities = run(model, rows, "classification")
        np.testing.assert_array_equal(labels, model.predict(rows))
        np.testing.assert_array_equal(probabilities, model.predict_proba(rows))


def test_a_row_at_a_training_point_takes_its_target_with_distance_weights(run):
    X, y = load_diabetes(return_X_y=True)
    model = KNeighborsRegressor(weights="distance", algorithm="kd_tree").fit(X, y)
    (values,) = run(model, X[:50], "regression")
    np.testing.assert_array_equal(values, model.predict(X[:50]))
    assert np.isfinite(values).all()


@pytest.mark.parametrize("priors", ["uniform", "empirical"])
@pytest.mark.parametrize("shrink", [None, 0.2])
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
def test_nearest_centroid(priors, shrink, loader, exact):
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), NearestCentroid(priors=priors, shrink_threshold=shrink)).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


def test_what_cannot_be_exported_exactly_is_refused():
    X, y = load_breast_cancer(return_X_y=True)
    brute = KNeighborsClassifier(weights="distance").fit(X, y)  # auto: brute for 30 features
    with pytest.raises(ExportError, match="algorithm='kd_tree' or 'ball_tree'"):
        export_onnx(brute, 30, "classification")
    with pytest.raises(ExportError, match="metric='chebyshev'"):
        export_onnx(KNeighborsClassifier(metric="chebyshev").fit(X, y), 30, "classification")
    with pytest.raises(ExportError, match="has no predict_proba"):
        export_onnx(NearestCentroid(metric="manhattan").fit(X, y), 30, "classification")
