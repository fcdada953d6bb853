"""``tabserve predict`` in this process: outputs equal in-process predictions row by row; errors name the row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import tabserve
from tabserve.cli import main

FEATURES = [f"feature_{i}" for i in range(5)]


def demo_table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).round(4)
    return pa.table({"id": np.arange(n) + 1000, **{f: x[:, i] for i, f in enumerate(FEATURES)},
                     "note": [f"r{i}" for i in range(n)]})


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip") if path.suffix == ".csv" else pq.read_table(path).to_pandas()


@pytest.mark.parametrize(("src_name", "dest_name"), [("in.csv", "out.parquet"), ("in.parquet", "out.csv"),
                                                     ("in.csv", "out.csv")])
def test_predictions_equal_in_process_ones_row_by_row(demo_bundle, demo_model, tmp_path, capsys, src_name,
                                                      dest_name):
    table = demo_table(1000)
    src, dest = write(table, tmp_path / src_name), tmp_path / dest_name
    # 300-row chunks: the last chunk is short, and rows must not be lost or reordered across chunks
    assert main(["predict", str(src), "-o", str(dest), "--model", str(demo_bundle), "--batch-rows", "300",
                 "--threads", "1"]) == 0
    out = read(dest)
    assert list(out.columns) == ["id", *FEATURES, "note", "prediction"]
    expected = demo_model.predict(table.select(FEATURES).to_pandas())
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    assert out["id"].tolist() == list(range(1000, 2000))
    assert out["note"].iloc[999] == "r999"
    assert "scored 1,000 rows" in capsys.readouterr().err


def test_keep_selects_the_copied_columns(demo_bundle, tmp_path):
    src = write(demo_table(50), tmp_path / "in.parquet")
    assert main(["predict", str(src), "-o", str(tmp_path / "out.parquet"), "--model", str(demo_bundle),
                 "--keep", "note,id", "--no-progress"]) == 0
    assert pq.read_table(tmp_path / "out.parquet").column_names == ["note", "id", "prediction"]
    assert main(["predict", str(src), "-o", str(tmp_path / "only.csv"), "--model", str(demo_bundle),
                 "--keep", "", "--no-progress"]) == 0
    assert list(pd.read_csv(tmp_path / "only.csv").columns) == ["prediction"]


def test_a_classifier_writes_labels_and_one_probability_column_per_class(iris_bundle, iris_model, tmp_path):
    from sklearn.datasets import load_iris

    x = load_iris().data
    names = iris_model.schema.names
    src = write(pa.table({n: x[:, i] for i, n in enumerate(names)}), tmp_path / "iris.csv")
    assert main(["predict", str(src), "-o", str(tmp_path / "out.parquet"), "--model", str(iris_bundle)]) == 0
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert list(out.columns) == [*names, "prediction", "probability_setosa", "probability_versicolor",
                                 "probability_virginica"]
    assert out["prediction"].tolist() == iris_model.predict(x).tolist()
    np.testing.assert_array_equal(out.iloc[:, -3:].to_numpy(), iris_model.predict_proba(x))
    assert set(out["prediction"]) == {"setosa", "versicolor", "virginica"}


@pytest.fixture(scope="module")
def rents_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a categorical feature (unknown cities refused) and missing values allowed."""
    from tabserve.training import train_file

    rng = np.random.default_rng(5)
    n = 200
    frame = pd.DataFrame({"age": rng.integers(18, 80, n).astype(float),
                          "city": rng.choice(["Brest", "Lyon", "Paris"], n), "rooms": rng.normal(3, 1, n)})
    frame["rent"] = 300 + 9 * frame["rooms"] + (frame["city"] == "Paris") * 400
    frame.loc[::9, "rooms"] = np.nan
    path = tmp_path_factory.mktemp("rents") / "rents.csv"
    frame.to_csv(path, index=False)
    return train_file(path, "rent", dest=path.parent / "bundle", params={"n_estimators": 10}).path


def test_categorical_features_and_missing_values(rents_bundle, tmp_path, capsys):
    rows = pd.DataFrame({"city": ["Paris", "Lyon", "Brest", "Paris"], "age": [30.0, 40, 50, 60],
                         "rooms": [2.0, None, 3.5, 4]})
    src = tmp_path / "rents.csv"
    rows.to_csv(src, index=False)
    assert main(["predict", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(rents_bundle)]) == 0
    expected = tabserve.load(rents_bundle).predict(rows)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["prediction"], expected, rtol=1e-12)

    rows.loc[2, "city"] = "Nantes"
    rows.to_csv(src, index=False)
    assert main(["predict", str(src), "-o", str(tmp_path / "bad.csv"), "--model", str(rents_bundle)]) == 2
    err = capsys.readouterr().err
    assert "row 2 (line 4 of rents.csv), column 'city': unknown category 'Nantes'" in err
    assert "'Brest', 'Lyon', 'Paris'" in err
    assert not (tmp_path / "bad.csv").exists()


def test_a_bad_value_in_a_later_chunk_is_named_with_its_row_and_line(demo_bundle, tmp_path, capsys):
    table = demo_table(100).to_pandas()
    table["feature_3"] = table["feature_3"].astype(object)
    table.loc[77, "feature_3"] = "12,5"
    src = tmp_path / "in.csv"
    table.to_csv(src, index=False)
    dest = tmp_path / "out.parquet"
    assert main(["predict", str(src), "-o", str(dest), "--model", str(demo_bundle), "--batch-rows", "10"]) == 2
    assert "row 77 (line 79 of in.csv), column 'feature_3': '12,5' is not a number" in capsys.readouterr().err
    assert not dest.exists() and not list(tmp_path.glob(".out.parquet.partial*"))  # no partial output


def test_a_missing_value_the_model_refuses_is_named_with_its_row(demo_bundle, tmp_path, capsys):
    table = demo_table(30).to_pandas()
    table.loc[25, "feature_1"] = np.nan
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), src)
    assert main(["predict", str(src), "-o", str(tmp_path / "o.csv"), "--model", str(demo_bundle),
                 "--batch-rows", "8"]) == 2
    assert "row 25, feature 'feature_1' (column 1): nan is not a finite number" in capsys.readouterr().err


def test_text_in_a_numeric_parquet_column_is_named(demo_bundle, tmp_path, capsys):
    table = demo_table(5).to_pandas()
    table["feature_0"] = ["1", "2", "x", "4", "5"]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), src)
    assert main(["predict", str(src), "-o", str(tmp_path / "o.csv"), "--model", str(demo_bundle)]) == 2
    assert "row 2, column 'feature_0': 'x' is not a number" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--keep", "id,nope"], "--keep names column(s) 'nope' that"),
    (["-o", "{tmp}/out.json"], "output {tmp}/out.json: unknown file type '.json'; use a .csv or .parquet file"),
    (["-o", "{tmp}/nowhere/out.csv"], "output folder {tmp}/nowhere does not exist"),
    (["--batch-rows", "0"], "--batch-rows must be at least 1"),
    (["--ray-workers", "2"], "--ray-address and --ray-workers need --ray"),
])
def test_bad_arguments_are_refused_before_scoring(demo_bundle, tmp_path, capsys, args, message):
    src = write(demo_table(5), tmp_path / "in.csv")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "-o" in args else ["-o", str(tmp_path / "out.csv")]
    assert main(["predict", str(src), *out, "--model", str(demo_bundle), *args]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_input_problems_are_named(demo_bundle, tmp_path, capsys):
    def run(src: Path) -> str:
        assert main(["predict", str(src), "-o", str(tmp_path / "o.csv"), "--model", str(demo_bundle)]) == 2
        return capsys.readouterr().err

    assert f"input {tmp_path}/none.csv does not exist" in run(tmp_path / "none.csv")
    missing = write(demo_table(3).drop_columns(["feature_4"]), tmp_path / "missing.csv")
    assert "lacks the feature column(s) 'feature_4' that model demo:" in run(missing)
    clash = write(demo_table(3).append_column("prediction", pa.array([1, 2, 3])), tmp_path / "clash.parquet")
    assert "already has a column 'prediction'" in run(clash)
    (tmp_path / "empty.csv").write_text("")
    assert "empty.csv is empty" in run(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text(",".join(FEATURES) + "\n")
    assert "the input has no rows" in run(tmp_path / "header.csv")
    (tmp_path / "junk.parquet").write_text("not parquet")
    assert "junk.parquet cannot be read as parquet" in run(tmp_path / "junk.parquet")


def test_no_model_given_and_no_demo_model_says_what_to_do(tmp_path, capsys):
    src = write(demo_table(3), tmp_path / "in.csv")
    assert main(["predict", str(src), "-o", str(tmp_path / "o.csv"), "--home", str(tmp_path / "home")]) == 2
    assert "pass the model to use with --model BUNDLE" in capsys.readouterr().err


def test_the_serving_install_stays_lean_until_predict_or_ray_is_used():
    code = ("import sys, tabserve, tabserve.ray; from tabserve.cli import build_parser; "
            "build_parser().parse_args(['predict', 'in.csv', '-o', 'out.csv', '--ray']); "
            "print(sorted(m for m in ('ray', 'pyarrow', 'tqdm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
