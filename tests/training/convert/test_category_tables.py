"""OrdinalEncoder and TargetEncoder: the fitted encoder's values for every category, unknown and missing
values as configured, bit for bit; KBinsDiscretizer: every strategy and encoding, bit for bit at its edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.preprocessing import KBinsDiscretizer, OrdinalEncoder, TargetEncoder

from tabserve.errors import ExportError
from tests.training.convert.run_onnx import dense, transform_onnx

RNG = np.random.default_rng(0)
N = 400


@pytest.fixture(scope="module")
def text() -> pd.DataFrame:
    city = RNG.choice(["Paris", "Lyon", "Nice", "Brest", "Metz", "Rare"], N, p=[.3, .3, .2, .1, .09, .01])
    return pd.DataFrame({"city": pd.Series(city, dtype=object),
                         "size": pd.Series(RNG.choice(["S", "M", "L"], N), dtype=object)})


@pytest.fixture(scope="module")
def numbers() -> pd.DataFrame:
    return pd.DataFrame({"a": RNG.integers(0, 5, N).astype(float), "b": RNG.choice([1.5, 2.5, np.nan], N)})


UNSEEN_TEXT = pd.DataFrame({"city": pd.Series(["Oslo", "Paris"], dtype=object),
                            "size": pd.Series(["XL", "S"], dtype=object)})
UNSEEN_NUMBERS = pd.DataFrame({"a": [9.0, np.nan, 2.0], "b": [3.5, np.nan, 1.5]})


@pytest.mark.parametrize("encoder", [
    OrdinalEncoder(),
    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, min_frequency=10),
    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-2, max_categories=3),
    OrdinalEncoder(categories=[["Lyon", "Paris", "Nice", "Brest", "Metz", "Rare"], ["S", "M", "L"]]),
], ids=repr)
def test_ordinal_encoder_on_text(encoder, text):
    encoder.fit(text)
    rows = text if encoder.handle_unknown == "error" else pd.concat([text, UNSEEN_TEXT], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(encoder, rows), encoder.transform(rows))


@pytest.mark.parametrize("encoder", [
    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),  # NaN seen in fit: NaN out
    OrdinalEncoder(encoded_missing_value=-9, handle_unknown="use_encoded_value", unknown_value=7),
], ids=repr)
def test_ordinal_encoder_on_numbers_with_missing_values(encoder, numbers):
    encoder.fit(numbers)
    rows = pd.concat([numbers, UNSEEN_NUMBERS], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(encoder, rows), encoder.transform(rows))


@pytest.mark.parametrize("target", ["continuous", "binary", "multiclass"])
@pytest.mark.parametrize("smooth", ["auto", 3.0])
def test_target_encoder_uses_its_fitted_encodings(target, smooth, text):
    y = RNG.normal(size=N) + (text["city"] == "Paris") * 2
    y = {"continuous": y, "binary": (y > 0.5).astype(int), "multiclass": np.digitize(y, [0.0, 1.0])}[target]
    encoder = TargetEncoder(smooth=smooth, random_state=0).fit(text, y)
    rows = pd.concat([text, UNSEEN_TEXT], ignore_index=True)  # unknown: the target mean
    out = transform_onnx(encoder, rows)
    np.testing.assert_array_equal(out, encoder.transform(rows))
    assert out.shape[1] == (6 if target == "multiclass" else 2)


def test_target_encoder_on_numbers_with_missing_values(numbers):
    encoder = TargetEncoder(random_state=0).fit(numbers, RNG.normal(size=N))
    rows = pd.concat([numbers, UNSEEN_NUMBERS], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(encoder, rows), encoder.transform(rows))


def test_an_encoder_fitted_on_numbers_refuses_text(numbers):
    encoder = OrdinalEncoder().fit(numbers.fillna(0.0))
    with pytest.raises(ExportError, match="gets strings but its categories are"):
        transform_onnx(encoder, numbers.astype(str).astype(object))


@pytest.mark.parametrize("strategy", ["uniform", "quantile", "kmeans"])
@pytest.mark.parametrize("encode", ["ordinal", "onehot", "onehot-dense"])
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_kbins_discretizer_at_and_beside_its_edges(strategy, encode, dtype):
    X = load_diabetes(as_frame=True).data.iloc[:, :6]
    # quantile_method is new in scikit-learn 1.7 (whose default is about to change); 1.6 has only this method
    new_kbins = "quantile_method" in KBinsDiscretizer().get_params()
    extra = {"quantile_method": "averaged_inverted_cdf"} if strategy == "quantile" and new_kbins else {}
    discretizer = KBinsDiscretizer(n_bins=[3, 4, 5, 2, 6, 7], encode=encode, strategy=strategy, dtype=dtype,
                                   **extra).fit(X)
    edges = np.concatenate([e[1:-1] for e in discretizer.bin_edges_])
    at = np.concatenate([edges, np.nextafter(edges, -1), np.nextafter(edges, 1), [-1e30, 1e30]])
    rows = pd.concat([X, pd.DataFrame(np.tile(at.reshape(-1, 1), (1, 6)), columns=X.columns)], ignore_index=True)
    np.testing.assert_array_equal(transform_onnx(discretizer, rows), dense(discretizer.transform(rows)))
