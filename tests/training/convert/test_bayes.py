"""Naive Bayes: probabilities within 1e-9 of scikit-learn (its logsumexp), labels by the joint likelihood."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

LOADERS = [load_breast_cancer, load_iris, load_wine, load_digits]
MODELS = {
    "gaussian": GaussianNB,
    "gaussian_priors": lambda: GaussianNB(var_smoothing=1e-3),
    "multinomial": MultinomialNB,
    "complement": ComplementNB,
    "complement_norm": lambda: ComplementNB(norm=True),
    "bernoulli": lambda: BernoulliNB(binarize=0.5),
}


def _rows(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    lo, hi = X.min(axis=0), X.max(axis=0)
    return np.vstack([X, rng.uniform(lo, hi, size=(500, X.shape[1])), X * 1.2])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__[5:])
def test_naive_bayes(name, loader, exact):
    X, y = loader(return_X_y=True)
    model = make_pipeline(MinMaxScaler(), MODELS[name]()).fit(X, y)
    exact(model, _rows(X), "classification", probe=False)


def test_gaussian_probabilities_that_underflow_are_zero_and_ties_take_the_first_class(run):
    X, y = load_iris(return_X_y=True)
    model = GaussianNB().fit(X, y)
    far = np.vstack([X * 4, X.mean(axis=0)])
    labels, probabilities = run(model, far, "classification")
    expected = model.predict_proba(far)
    assert (expected == 0).any()
    np.testing.assert_array_equal(probabilities == 0, expected == 0)
    np.testing.assert_array_equal(labels, model.predict(far))


def test_bernoulli_binarize_threshold_is_probed_at_and_next_to_it(exact):
    """``x > binarize``: the threshold and the doubles on either side are probed (adversarial rows)."""
    X, y = load_breast_cancer(return_X_y=True)
    model = BernoulliNB(binarize=float(np.median(X[:, 0]))).fit(X, y)
    exact(model, X[:100], "classification")  # probe=True: rows with each column at the threshold


def test_bernoulli_without_binarize_reads_the_values_as_they_are(exact):
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(MinMaxScaler(), BernoulliNB(binarize=None)).fit(X > X.mean(axis=0), y)
    rows = np.vstack([(X > X.mean(axis=0)).astype(float), X[:50] / X.max(axis=0)])
    exact(model, rows, "classification", probe=False)


def test_string_labels_and_two_tied_classes(exact):
    """Two classes with the same statistics: equal joint likelihoods, the first class wins as in numpy."""
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 3.0]])
    y = np.array(["a", "a", "b", "b", "c", "c"], dtype=object)
    model = MultinomialNB().fit(X, y)
    exact(model, np.array([[0.0, 1.0], [1.0, 1.0], [5.0, 0.5]]), "classification", probe=False)
