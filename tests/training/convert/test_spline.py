"""SplineTransformer: scipy's B-spline evaluation reproduced operation for operation, bit for bit, for
every extrapolation, degree, knot placement and include_bias, NaN rows as zeros, outside the range too."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.preprocessing import SplineTransformer

# handle_missing is new in scikit-learn 1.8; before it, SplineTransformer refuses NaN (so no NaN rows there)
HANDLES_MISSING = "handle_missing" in SplineTransformer().get_params()

from tests.training.convert.run_onnx import transform_onnx


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).data.iloc[:, [0, 2, 3, 8]]


@pytest.mark.parametrize("extrapolation", ["continue", "constant", "linear", "periodic", "error"])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("knots", ["uniform", "quantile"])
@pytest.mark.parametrize("include_bias", [True, False])
def test_spline_transformer_bit_for_bit(extrapolation, degree, knots, include_bias, diabetes):
    if extrapolation == "constant" and degree == 0:
        pytest.skip("scikit-learn itself fails on rows above the range (it assigns 5 values to 0 columns)")
    spline = SplineTransformer(degree=degree, n_knots=6, knots=knots, extrapolation=extrapolation,
                               include_bias=include_bias,
                               **({"handle_missing": "zeros"} if HANDLES_MISSING else {})).fit(diabetes)
    if extrapolation == "error":  # scikit-learn refuses rows beyond the knots
        rows = diabetes.copy()
    else:
        rows = pd.concat([diabetes, diabetes * 1.7, diabetes - 0.05, diabetes * 10], ignore_index=True)
    knots_at = np.concatenate([spl.t for spl in spline.bsplines_])
    if extrapolation != "error":
        at = pd.DataFrame(np.tile(knots_at.reshape(-1, 1), (1, diabetes.shape[1])), columns=diabetes.columns)
        rows = pd.concat([rows, at, at.apply(lambda v: np.nextafter(v, np.inf))], ignore_index=True)
    if HANDLES_MISSING:
        rows.iloc[::19, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = spline.transform(rows)
    np.testing.assert_array_equal(transform_onnx(spline, rows), expected)
