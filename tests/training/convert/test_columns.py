"""OneHotEncoder and ColumnTransformer: the same 0/1 columns and the same column order as scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from tabserve.errors import ExportError
from tabserve.training.convert import FeatureSpec, export_exact
from tests.training.convert.run_onnx import dense, transform_onnx


@pytest.fixture
def frame() -> pd.DataFrame:
    """'city' with a rare category, 'size' binary, numbers 'a' (with NaN) and 'b'."""
    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({
        "a": rng.normal(size=n),
        "city": rng.choice(["Paris", "Lyon", "Nice", "Brest", "Metz"], n, p=[0.45, 0.3, 0.15, 0.07, 0.03]),
        "b": rng.normal(5, 2, n),
        "size": rng.choice(["S", "L"], n),
    })
    frame["city"] = frame["city"].astype(object)
    frame["size"] = frame["size"].astype(object)
    frame.loc[::11, "a"] = np.nan
    return frame


def _with_unseen(frame: pd.DataFrame) -> pd.DataFrame:
    unseen = frame.head(3).copy()
    unseen["city"] = ["Oslo", "", "paris"]  # never seen; empty; another case
    return pd.concat([frame, unseen], ignore_index=True)


def _sklearn(transformer, frame: pd.DataFrame) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "unknown categories ... encoded as zeros"
        return dense(transformer.transform(frame))


ENCODERS = [
    OneHotEncoder(),
    OneHotEncoder(sparse_output=False, handle_unknown="ignore"),
    OneHotEncoder(drop="first", handle_unknown="ignore"),
    OneHotEncoder(drop="if_binary", handle_unknown="ignore"),
    OneHotEncoder(drop=["Lyon", "L"]),
    OneHotEncoder(min_frequency=30, handle_unknown="infrequent_if_exist"),
    OneHotEncoder(max_categories=3, handle_unknown="infrequent_if_exist", drop="first"),
    OneHotEncoder(min_frequency=30, handle_unknown="ignore"),
    OneHotEncoder(max_categories=2, drop="if_binary", handle_unknown="warn"),
]


@pytest.mark.parametrize("encoder", ENCODERS, ids=repr)
def test_one_hot_encoder_on_strings(encoder, frame):
    strings = frame[["city", "size"]]
    encoder.fit(strings)
    probe = strings if encoder.handle_unknown == "error" else _with_unseen(frame)[["city", "size"]]
    np.testing.assert_array_equal(transform_onnx(encoder, probe), _sklearn(encoder, probe))


def test_one_hot_encoder_on_numbers(frame):
    codes = pd.DataFrame({"rooms": np.resize([1.0, 2.0, 3.0, 5.0], len(frame))})
    encoder = OneHotEncoder(handle_unknown="ignore", drop="first").fit(codes)
    probe = pd.concat([codes, pd.DataFrame({"rooms": [4.0, 2.0000001]})], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(encoder, probe), _sklearn(encoder, probe))


def test_categories_that_are_not_strings_are_refused_for_string_input(frame):
    encoder = OneHotEncoder().fit(pd.DataFrame({"city": np.array([1, 2, 3], dtype=object)}))
    with pytest.raises(ExportError, match="fit the encoder on string values"):
        transform_onnx(encoder, frame[["city"]])


@pytest.mark.parametrize("remainder", ["drop", "passthrough"])
def test_column_transformer_by_name_keeps_sklearn_column_order(remainder, frame):
    ct = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), ["b", "a"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["size", "city"]),
        ("unused", "drop", ["size"]),
    ], remainder=remainder, transformer_weights={"cat": 2.5})
    data = frame.drop(columns="size").assign(size=frame["size"], c=np.arange(len(frame)) * 0.5)
    ct.fit(data)
    probe = _with_unseen(data)
    out = transform_onnx(ct, probe)
    np.testing.assert_array_equal(out, _sklearn(ct, probe))
    # b, a and a's missing indicator; size (2) and city (5); 'c' if it passes through
    assert out.shape[1] == 3 + 7 + (1 if remainder == "passthrough" else 0)


@pytest.mark.parametrize("columns", [
    ([0, 2], [1]),
    ([-4, -2], [-3]),
    (np.array([True, False, True, False]), np.array([False, True, False, False])),
    (slice(0, 1), slice(1, 2)),
    (slice("a", "a"), slice("city", "city")),
])
def test_column_transformer_selects_by_position_mask_and_slice(columns, frame):
    numbers, strings = columns
    ct = ColumnTransformer([("num", MinMaxScaler(), numbers), ("cat", OneHotEncoder(), strings)],
                           remainder="drop").fit(frame.fillna(0.0))
    data = frame.fillna(0.0)
    np.testing.assert_array_equal(transform_onnx(ct, data), _sklearn(ct, data))


def test_a_whole_pipeline_with_text_columns_exports_and_predicts_as_sklearn(frame):
    data = frame.fillna(0.0)
    y = data["a"] * 3 + (data["city"] == "Paris") * 2.0 + data["b"]
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "size"])],
                           remainder=StandardScaler())
    model = make_pipeline(ct, Ridge()).fit(data, y)
    specs = [FeatureSpec("a"), FeatureSpec("city", "categorical"), FeatureSpec("b"), FeatureSpec("size", "categorical")]
    exported = export_exact(model, specs, "regression")
    assert exported.input == {"name": "X", "dtype": "float64", "shape": [None, 2]}
    assert exported.categorical_input == {"name": "X_cat", "dtype": "str", "shape": [None, 2]}


def test_string_columns_passed_through_are_refused(frame):
    ct = ColumnTransformer([("num", StandardScaler(), ["b"])], remainder="passthrough").fit(frame.fillna(0.0))
    with pytest.raises(ExportError, match="passing them through"):
        transform_onnx(ct, frame.fillna(0.0))


def test_text_columns_without_a_column_transformer_are_refused(frame):
    model = make_pipeline(StandardScaler(), Ridge()).fit(frame[["a", "b"]].fillna(0.0), frame["b"])
    with pytest.raises(ExportError, match="put a ColumnTransformer first"):
        export_exact(model, [FeatureSpec("a"), FeatureSpec("city", "categorical")], "regression")
