"""``tabserve predict --ray``: Ray Data actors give the in-process predictions, row by row, in input order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tabserve.cli import main

FEATURES = [f"feature_{i}" for i in range(5)]


def table(n: int) -> pa.Table:
    x = np.random.default_rng(3).normal(size=(n, 5)).round(4)
    return pa.table({"id": np.arange(n), **{f: x[:, i] for i, f in enumerate(FEATURES)}})


@pytest.mark.parametrize(("src_name", "dest_name"), [("in.csv", "out.parquet"), ("in.parquet", "out.csv")])
def test_ray_predictions_equal_in_process_ones_in_input_order(ray_address, demo_bundle, demo_model, tmp_path,
                                                              src_name, dest_name):
    data = table(3000)
    src, dest = tmp_path / src_name, tmp_path / dest_name
    pa_csv.write_csv(data, src) if src.suffix == ".csv" else pq.write_table(data, src, row_group_size=700)
    assert main(["predict", str(src), "-o", str(dest), "--model", str(demo_bundle), "--ray", "--batch-rows",
                 "400", "--ray-workers", "2", "--no-progress"]) == 0
    out = pd.read_csv(dest, float_precision="round_trip") if dest.suffix == ".csv" else pd.read_parquet(dest)
    assert list(out.columns) == ["id", *FEATURES, "prediction"]
    assert out["id"].tolist() == list(range(3000))
    np.testing.assert_array_equal(out["prediction"], demo_model.predict(data.select(FEATURES).to_pandas()))


def test_a_folder_output_gets_parquet_files_from_the_workers(ray_address, iris_bundle, iris_model, tmp_path):
    from sklearn.datasets import load_iris

    x = load_iris().data
    names = iris_model.schema.names
    pq.write_table(pa.table({"n": np.arange(len(x)), **{f: x[:, i] for i, f in enumerate(names)}}),
                   tmp_path / "iris.parquet")
    assert main(["predict", str(tmp_path / "iris.parquet"), "-o", str(tmp_path / "scored"), "--model",
                 str(iris_bundle), "--ray", "--keep", "n", "--no-progress"]) == 0
    out = pd.read_parquet(tmp_path / "scored").sort_values("n")
    assert list(out.columns) == ["n", "prediction", "probability_setosa", "probability_versicolor",
                                 "probability_virginica"]
    assert out["prediction"].tolist() == iris_model.predict(x).tolist()
    np.testing.assert_array_equal(out.iloc[:, 2:].to_numpy(), iris_model.predict_proba(x))


def test_a_bad_value_stops_the_job_with_the_column_and_value(ray_address, demo_bundle, tmp_path, capsys):
    frame = table(50).to_pandas()
    frame.loc[31, "feature_2"] = np.inf
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet")
    dest = tmp_path / "out.parquet"
    assert main(["predict", str(tmp_path / "in.parquet"), "-o", str(dest), "--model", str(demo_bundle),
                 "--ray", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "feature 'feature_2' (column 2): inf is not a finite number" in err
    assert "rerun without --ray for its row in the file" in err
    assert not dest.exists()


def test_a_missing_column_is_refused_before_ray_starts(demo_bundle, tmp_path, capsys):
    pa_csv.write_csv(table(5).drop_columns(["feature_0"]), tmp_path / "in.csv")
    assert main(["predict", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.parquet"), "--model",
                 str(demo_bundle), "--ray"]) == 2
    err = capsys.readouterr().err
    assert "lacks the feature column(s) 'feature_0'" in err and "Ray" not in err
