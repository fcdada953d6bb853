"""Everyday preprocessing steps through their exact converters and onnxruntime, against scikit-learn's
transform: element-wise ufuncs, Binarizer, Normalizer, PCA/TruncatedSVD, selectors, PolynomialFeatures."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD
from sklearn.feature_selection import (
    RFE,
    SelectFromModel,
    SelectKBest,
    SelectPercentile,
    VarianceThreshold,
    f_classif,
    mutual_info_classif,
)
from sklearn.linear_model import Lasso, LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
    Normalizer,
    PolynomialFeatures,
    StandardScaler,
)

from tabserve.errors import ExportError
from tests.training.convert.run_onnx import transform_onnx

TINY = np.finfo(np.float64).tiny


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN in other places"
    same = (actual == expected) | np.isnan(expected)  # infinities included
    with np.errstate(invalid="ignore"):
        err = np.abs(actual - expected) / np.maximum(np.abs(expected), TINY)
    return float(np.max(np.where(same, 0.0, err), initial=0.0))


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return load_breast_cancer(as_frame=True).data


@pytest.fixture(scope="module")
def probe(cancer) -> pd.DataFrame:
    """The data, outside its range, negated (log of a negative is NaN), and rows of zeros and tiny values."""
    extra = pd.DataFrame([np.zeros(cancer.shape[1]), np.full(cancer.shape[1], 1e-300)], columns=cancer.columns)
    return pd.concat([cancer, cancer * 7 - 3, -cancer, extra], ignore_index=True)


EXACT_UFUNCS = [np.abs, np.negative, np.square, np.reciprocal, np.sqrt, np.floor, np.ceil, np.trunc, np.rint,
                np.sign]



def _stable_repr(obj: object) -> str:
    """repr without memory addresses: every pytest process (xdist workers too) collects the same test ids."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))

@pytest.mark.parametrize("func", EXACT_UFUNCS, ids=lambda f: f.__name__)
def test_exact_ufuncs_are_bit_for_bit(func, probe):
    transformer = FunctionTransformer(func).fit(probe)
    with np.errstate(all="ignore"):
        expected = transformer.transform(probe).to_numpy()
    np.testing.assert_array_equal(transform_onnx(transformer, probe), expected)


@pytest.mark.parametrize("func", [np.exp, np.log, np.log1p, np.expm1, np.tanh], ids=lambda f: f.__name__)
def test_transcendental_ufuncs_within_a_few_ulps(func, probe):
    transformer = FunctionTransformer(func).fit(probe)
    with np.errstate(all="ignore"):
        expected = transformer.transform(probe / 100).to_numpy()  # exp stays finite for most values
    assert _rel(transform_onnx(transformer, probe / 100), expected) < 1e-15  # measured <= 8.9e-16 (tanh)


def test_log1p_of_tiny_values_keeps_their_digits():
    frame = pd.DataFrame({"a": [1e-20, -1e-17, 3e-300, 0.0, 1e300, np.inf, -1.0, -2.0]})
    transformer = FunctionTransformer(np.log1p).fit(frame)
    with np.errstate(all="ignore"):
        expected = transformer.transform(frame).to_numpy()
    assert _rel(transform_onnx(transformer, frame), expected) < 1e-15  # Log(1 + x) would give 0 for 1e-20


@pytest.mark.parametrize("transformer", [FunctionTransformer(lambda x: x + 1),
                                         FunctionTransformer(np.power, kw_args={"x2": 2}),
                                         FunctionTransformer(np.arcsinh)], ids=_stable_repr)
def test_python_functions_and_other_ufuncs_are_refused_naming_the_alternatives(transformer, probe):
    transformer.fit(probe)
    with pytest.raises(ExportError, match=r"cannot be exported: it runs Python code; use one of the numpy "
                                          r"ufuncs np\.absolute"):
        transform_onnx(transformer, probe)


@pytest.mark.parametrize("threshold", [0.0, 0.1, 15.0])
def test_binarizer(threshold, probe):
    binarizer = Binarizer(threshold=threshold).fit(probe)
    np.testing.assert_array_equal(transform_onnx(binarizer, probe), binarizer.transform(probe))


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_normalizer(norm, probe):
    normalizer = Normalizer(norm=norm).fit(probe)
    out = transform_onnx(normalizer, probe)
    assert _rel(out, normalizer.transform(probe)) < 1e-15
    assert not out[-2].any()  # a zero row stays zero (its norm counts as 1)


@pytest.mark.parametrize("decomposition", [PCA(5), PCA(whiten=True), PCA(3, svd_solver="randomized", random_state=0),
                                           IncrementalPCA(4), TruncatedSVD(6, random_state=0)], ids=_stable_repr)
def test_projections_within_1e_9(decomposition, cancer, probe):
    model = make_pipeline(StandardScaler(), decomposition).fit(cancer)
    expected = model.transform(probe)
    out = transform_onnx(model, probe)
    # the product adds its terms in another order: relative to each value's own terms' size it is exact
    # to a few ulps; values that cancel to near 0 are compared against that size
    size = np.abs(model[:-1].transform(probe)) @ np.abs(decomposition.components_.T)
    assert float(np.max(np.abs(out - expected) / size)) < 1e-14
    assert _rel(out[np.abs(expected) > 1e-6 * size], expected[np.abs(expected) > 1e-6 * size]) < 1e-9


@pytest.mark.parametrize("selector", [
    VarianceThreshold(0.5), SelectKBest(f_classif, k=7), SelectPercentile(mutual_info_classif, percentile=20),
    SelectFromModel(Lasso(alpha=0.01)), RFE(LinearRegression(), n_features_to_select=4)], ids=_stable_repr)
def test_selectors_gather_the_selected_columns(selector, cancer):
    y = load_breast_cancer().target
    selector.fit(cancer, y)
    frame = cancer.copy()
    if isinstance(selector, VarianceThreshold):  # the one that takes NaN: the gather carries it along
        frame.iloc[::7, 3] = np.nan
    np.testing.assert_array_equal(transform_onnx(selector, frame), selector.transform(frame))


def test_a_selector_that_selects_nothing_is_refused(cancer):
    selector = SelectKBest(f_classif, k=0).fit(cancer, load_breast_cancer().target)
    with pytest.raises(ExportError, match="SelectKBest selects no feature"):
        transform_onnx(selector, cancer)


@pytest.mark.parametrize("poly", [PolynomialFeatures(2), PolynomialFeatures(3), PolynomialFeatures(0),
                                  PolynomialFeatures(3, interaction_only=True),
                                  PolynomialFeatures((2, 3), include_bias=False), PolynomialFeatures((2, 4)),
                                  PolynomialFeatures(1, include_bias=False)], ids=_stable_repr)
def test_polynomial_features_bit_for_bit(poly):
    X = load_diabetes(as_frame=True).data.iloc[:, :5] * [1, 10, 1e3, 1e-3, 7]
    poly.fit(X)
    probe = pd.concat([X, X * 1e5, -X], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(poly, probe), poly.transform(probe))
