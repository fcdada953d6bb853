"""Scalers and imputers: the exported graph gives scikit-learn's values bit for bit, NaN included."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from tabserve.errors import ExportError
from tests.training.convert.run_onnx import transform_onnx


@pytest.fixture
def frame() -> pd.DataFrame:
    """Columns of very different scales, a constant column (scale 1), NaN in 'b' and 'd'."""
    rng = np.random.default_rng(7)
    n = 200
    frame = pd.DataFrame({"a": rng.normal(1e3, 1e2, n), "b": rng.exponential(1e-3, n), "c": np.full(n, 3.25),
                          "d": rng.integers(-5, 5, n).astype(float)})
    frame.loc[::9, "b"] = np.nan
    frame.loc[::13, "d"] = np.nan
    return frame


SCALERS = [
    StandardScaler(),
    StandardScaler(with_mean=False),
    StandardScaler(with_std=False),
    MinMaxScaler(),
    MinMaxScaler(feature_range=(-3, 7)),
    MinMaxScaler(clip=True),
    RobustScaler(),
    RobustScaler(with_centering=False),
    RobustScaler(with_scaling=False),
    RobustScaler(quantile_range=(10, 90), unit_variance=True),
    MaxAbsScaler(),
]


@pytest.mark.parametrize("scaler", SCALERS, ids=repr)
def test_scalers_are_bit_exact_and_keep_nan(scaler, frame):
    scaler.fit(frame.iloc[:150])
    probe = pd.concat([frame, frame * 3 - 1e4], ignore_index=True)  # values outside the fitted range too
    expected = scaler.transform(probe)
    np.testing.assert_array_equal(transform_onnx(scaler, probe), expected)


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
@pytest.mark.parametrize("add_indicator", [False, True])
def test_simple_imputer_fills_as_sklearn(strategy, add_indicator, frame):
    imputer = SimpleImputer(strategy=strategy, fill_value=-7.5, add_indicator=add_indicator).fit(frame)
    out = transform_onnx(imputer, frame)
    np.testing.assert_array_equal(out, imputer.transform(frame))
    assert out.shape[1] == 4 + (2 if add_indicator else 0)  # indicators for 'b' and 'd' only


def test_simple_imputer_with_a_number_as_missing_marker(frame):
    marked = frame.fillna(-1.0)
    imputer = SimpleImputer(missing_values=-1.0, strategy="median").fit(marked)
    np.testing.assert_array_equal(transform_onnx(imputer, marked), imputer.transform(marked))


@pytest.mark.parametrize("keep", [False, True])
def test_a_column_never_seen_is_dropped_or_kept_as_sklearn_does(keep, frame):
    frame = frame.assign(e=np.nan)
    imputer = SimpleImputer(keep_empty_features=keep).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Skipping features without any observed values"
        expected = imputer.transform(frame)
    np.testing.assert_array_equal(transform_onnx(imputer, frame), expected)
    assert expected.shape[1] == (5 if keep else 4)


def test_imputer_then_scaler_pipeline(frame):
    pipeline = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()).fit(frame)
    np.testing.assert_array_equal(transform_onnx(pipeline, frame), pipeline.transform(frame))


def test_identity_function_transformer_passes_columns_through(frame):
    identity = FunctionTransformer().fit(frame)
    np.testing.assert_array_equal(transform_onnx(identity, frame), frame.to_numpy())


def test_a_python_function_is_refused(frame):
    shifted = FunctionTransformer(lambda x: np.log1p(x + 1)).fit(frame)
    with pytest.raises(ExportError, match="it runs Python code"):
        transform_onnx(shifted, frame)


def test_a_scaler_on_strings_says_to_encode_them():
    strings = pd.DataFrame({"city": np.array(["Paris", "Lyon"], dtype=object)})
    scaler = StandardScaler().fit([[0.0], [1.0]])
    with pytest.raises(ExportError, match="StandardScaler gets string columns; encode them first"):
        transform_onnx(scaler, strings)
