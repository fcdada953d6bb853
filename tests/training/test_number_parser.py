"""One correctly rounded number parser: a model trained on a CSV answers, over HTTP and with `tabserve predict`,
exactly as its fitted pipeline does on that CSV's numbers (each decimal read as the nearest double, as Python's
float() and every JSON client read it).

scikit-learn's diabetes data written by pandas holds 17-digit decimals that pandas' default CSV parser misrounds;
its s2 column has more distinct values than HistGradientBoosting has bins, so the model's thresholds sit on
training values and a misrounded read changes answers on the training rows themselves.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes

import tabserve
from tabserve.batch.files import open_source
from tabserve.training import TrainResult, train_file
from tabserve.training.tables import read_table


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[list[str]]]:
    """diabetes.csv, its header and its rows as text."""
    path = tmp_path_factory.mktemp("numbers") / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)  # full precision: repr of each double
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    return path, header, rows


@pytest.fixture(scope="module")
def trained(diabetes, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    path = diabetes[0]
    return train_file(path, "target", estimator="hist_gradient_boosting",
                      dest=tmp_path_factory.mktemp("bundle") / "diabetes")


def _exact(rows: list[list[str]], width: int) -> np.ndarray:
    return np.array([[float(v) for v in row[:width]] for row in rows])


def test_the_file_is_one_that_pandas_default_parser_misreads(diabetes):
    path, header, rows = diabetes
    default = pd.read_csv(path).to_numpy()
    assert (default != _exact(rows, len(header))).sum() > 1000  # else this file would not test the parser


def test_training_reads_each_number_as_float_does(diabetes):
    path, header, rows = diabetes
    np.testing.assert_array_equal(read_table(path).frame.to_numpy(), _exact(rows, len(header)), strict=True)


def test_http_and_batch_scoring_answer_as_the_fitted_pipeline(diabetes, trained, cli, tmp_path):
    path, header, rows = diabetes
    features = trained.manifest.feature_names
    assert features == header[:-1]
    exact = _exact(rows, len(features))
    expected = trained.pipeline.predict(exact)
    # the rows as tabserve read them for training are these same numbers (46 rows differed with pandas' parser)
    as_trained = read_table(path).frame[features].to_numpy()
    np.testing.assert_array_equal(trained.pipeline.predict(as_trained), expected)

    # HTTP: the CSV's own text as JSON numbers, parsed by the server
    body = '{"data": [' + ", ".join("[" + ", ".join(row[:len(features)]) + "]" for row in rows) + "]}"
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(trained.path))
    with TestClient(app) as client:
        r = client.post("/api/v1/predict/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-9, atol=0)

    # tabserve predict: the same file, read by the batch reader
    out = tmp_path / "scored.csv"
    assert cli("predict", path, "-o", out, "--model", trained.path, "--no-progress", "--keep", "") == 0
    np.testing.assert_allclose(pd.read_csv(out, float_precision="round_trip")["prediction"], expected,
                               rtol=1e-9, atol=0)


def _hard_decimals(n: int) -> list[str]:
    """Long decimals, exponents, and exact midpoints between two doubles (ties round to even)."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        digits = int(rng.integers(1, 10**17, dtype=np.int64))
        out += [f"-0.{digits:017d}", f"{digits}e{int(rng.integers(-40, 20))}", f"{digits / 10**int(rng.integers(0, 17)):.25g}"]
        x = float(rng.normal(scale=10.0 ** int(rng.integers(-5, 6))))
        out.append(format((Decimal(x) + Decimal(float(np.nextafter(x, np.inf)))) / 2, "f"))
    return out


def test_the_batch_reader_rounds_as_the_training_reader(tmp_path):
    """`tabserve predict` reads CSV with pyarrow, training with pandas: both give float()'s double."""
    values = _hard_decimals(5000)
    path = tmp_path / "hard.csv"
    path.write_text("x,y\n" + "".join(f"{v},{v}\n" for v in values))
    exact = np.array([float(v) for v in values])
    np.testing.assert_array_equal(read_table(path).frame["x"].to_numpy(), exact, strict=True)
    source = open_source(path, {"x": pa.float64()})
    try:
        source.select(["x"])
        batched = np.concatenate([b.column(0).to_numpy() for b in source.batches(1000)])
    finally:
        source.close()
    np.testing.assert_array_equal(batched, exact, strict=True)
    assert (pd.read_csv(path)["x"].to_numpy() != exact).any()  # the values do tell the parsers apart


def test_an_imported_model_is_described_by_the_sample_as_written(diabetes, tmp_path, cli: Callable[..., int]):
    """The sample's statistics in the manifest are those of its numbers, not of a misrounded read."""
    import pickle

    from sklearn.linear_model import LinearRegression

    path, header, rows = diabetes
    exact = _exact(rows, len(header))
    model = LinearRegression().fit(pd.DataFrame(exact[:, :-1], columns=header[:-1]), exact[:, -1])
    (pickled := tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    dest = tmp_path / "imported"
    assert cli("import", pickled, "--sample", path, "--target", "target", "--trust-pickle", "--out", dest) == 0
    manifest = tabserve.load(dest).manifest
    for i, feature in enumerate(manifest.features):
        assert feature.stats is not None
        assert (feature.stats.min, feature.stats.max) == (exact[:, i].min(), exact[:, i].max())
