"""Text features end to end: trained bundles with a OneHotEncoder, scored over HTTP by name or position."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import tabserve
from tabserve.training import TrainResult, train_file

CITIES = ["Brest", "Lyon", "Nice", "Paris"]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 240
    frame = pd.DataFrame({"age": rng.integers(18, 80, n).astype(float), "city": rng.choice(CITIES, n),
                          "rooms": rng.normal(3, 1, n)})
    frame["rent"] = 300 + 9 * frame["rooms"] + (frame["city"] == "Paris") * 400 + rng.normal(0, 20, n)
    frame.loc[::9, "rooms"] = np.nan  # a random forest takes missing values
    return frame


@pytest.fixture(scope="module")
def rents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rents") / "rents.csv"
    _frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def strict(rents: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Unknown cities refused; missing rooms allowed (random forest)."""
    return train_file(rents, "rent", dest=tmp_path_factory.mktemp("b") / "strict", params={"n_estimators": 10})


@pytest.fixture(scope="module")
def lenient(rents: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Unknown cities encoded as none; a linear model, which takes no missing values (rows with NaN dropped)."""
    frame = _frame().dropna()
    path = rents.with_name("rents-complete.csv")
    frame.to_csv(path, index=False)
    return train_file(path, "rent", estimator="linear", unknown_category="ignore",
                      dest=tmp_path_factory.mktemp("b") / "lenient")


@pytest.fixture
def strict_client(make_client, strict: TrainResult) -> Iterator[TestClient]:
    with make_client(tabserve.load(strict.path)) as c:
        yield c


@pytest.fixture
def lenient_client(make_client, lenient: TrainResult) -> Iterator[TestClient]:
    with make_client(tabserve.load(lenient.path)) as c:
        yield c


def _sklearn(result: TrainResult, rows: list[dict]) -> np.ndarray:
    frame = pd.DataFrame(rows)[result.manifest.feature_names].astype({"age": float, "rooms": float})
    return result.pipeline.predict(frame)


def test_the_manifest_describes_the_text_feature(strict):
    m = strict.manifest
    city = next(f for f in m.features if f.name == "city")
    assert (city.kind, city.dtype, city.categories, city.handle_unknown) == ("categorical", "str", CITIES, "error")
    assert m.input is not None and m.input.dtype == "float64" and m.input.shape == [None, 2]
    assert m.categorical_input is not None and m.categorical_input.shape == [None, 1]
    assert [f.allow_missing for f in m.features if f.kind == "numeric"] == [False, True]  # age, rooms


def test_named_records_with_strings(strict_client, strict):
    rows = [{"age": 31, "city": "Paris", "rooms": 2.5}, {"city": "Brest", "rooms": 4.0, "age": 64}]
    r = strict_client.post("/api/v1/predict/batch", json={"records": rows})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], _sklearn(strict, rows), rtol=1e-9, atol=0)


def test_positional_data_with_strings(strict_client, strict):
    r = strict_client.post("/api/v1/predict", json={"data": [31, "Paris", 2.5]})
    assert r.status_code == 200, r.text
    expected = _sklearn(strict, [{"age": 31, "city": "Paris", "rooms": 2.5}])[0]
    assert r.json()["prediction"] == pytest.approx(expected, rel=1e-9, abs=0)
    batch = strict_client.post("/api/v1/predict/batch", json={"data": [[31, "Paris", 2.5], [50, "Lyon", 3.0]]})
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2


def test_a_missing_value_where_the_model_takes_one(strict_client, strict):
    r = strict_client.post("/api/v1/predict", json={"data": [31, "Nice", None]})
    assert r.status_code == 200, r.text
    expected = _sklearn(strict, [{"age": 31, "city": "Nice", "rooms": np.nan}])[0]
    assert r.json()["prediction"] == pytest.approx(expected, rel=1e-9, abs=0)
    refused = strict_client.post("/api/v1/predict", json={"data": [None, "Nice", 3.0]})
    assert refused.status_code == 422 and refused.json()["feature"] == "age"


def test_an_unknown_category_is_a_422_naming_the_feature(strict_client):
    r = strict_client.post("/api/v1/predict/batch",
                           json={"records": [{"age": 31, "city": "Paris", "rooms": 2.5},
                                             {"age": 40, "city": "Oslo", "rooms": 3.0}]})
    assert r.status_code == 422
    body = r.json()
    assert body["feature"] == "city" and body["row"] == 1
    assert "row 1, feature 'city' (column 1): unknown category 'Oslo'; the model knows only 'Brest', 'Lyon', " \
           "'Nice', 'Paris'" in body["detail"]


@pytest.mark.parametrize(("value", "fragment"), [
    (7, "7 is not a string"), (None, "the value is null; this categorical feature needs a value")])
def test_a_non_string_category_is_a_422(strict_client, value, fragment):
    r = strict_client.post("/api/v1/predict", json={"data": [31, value, 2.5]})
    assert r.status_code == 422 and r.json()["feature"] == "city"
    assert f"feature 'city' (column 1): {fragment}" in r.json()["detail"]


@pytest.mark.filterwarnings("ignore:Found unknown categories")
def test_an_unknown_category_is_encoded_as_none_when_the_model_ignores_it(lenient_client, lenient):
    rows = [{"age": 31, "city": "Oslo", "rooms": 2.5}, {"age": 31, "city": "Paris", "rooms": 2.5}]
    r = lenient_client.post("/api/v1/predict/batch", json={"records": rows})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    np.testing.assert_allclose(predictions, _sklearn(lenient, rows), rtol=1e-9, atol=0)
    assert predictions[0] != predictions[1]
