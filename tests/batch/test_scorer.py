"""``tabserve predict`` on an anomaly bundle writes the label and both scores, as v1 answers them: the columns
``prediction`` (-1/1, ``predict``), ``score`` (``score_samples``) and ``decision`` (``decision_function``)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest

from tabserve.cli import main
from tabserve.training import import_model

REL = 1e-9


def _rel(got: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)).max())


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[IsolationForest, pd.DataFrame, Path]:
    """A fitted IsolationForest, its data, and the anomaly bundle ``tabserve import`` made of it."""
    folder = tmp_path_factory.mktemp("anomaly")
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    frame.to_csv(folder / "sample.csv", index=False)
    model = IsolationForest(n_estimators=30, contamination=0.1, random_state=0).fit(frame)
    joblib.dump(model, folder / "detector.joblib")
    path = import_model(folder / "detector.joblib", folder / "sample.csv", trust_pickle=True,
                        dest=folder / "bundle").path
    return model, frame, path


@pytest.mark.parametrize("dest_name", ["out.csv", "out.parquet"])
def test_an_anomaly_bundle_writes_label_score_and_decision(detector, tmp_path, dest_name):
    model, frame, bundle = detector
    src = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": np.arange(len(frame)), **{c: frame[c].to_numpy() for c in frame.columns}}), src)
    dest = tmp_path / dest_name

    assert main(["predict", str(src), "-o", str(dest), "--model", str(bundle), "--keep", "id",
                 "--batch-rows", "200", "--no-progress"]) == 0

    out = (pa_csv.read_csv(dest) if dest.suffix == ".csv" else pq.read_table(dest)).to_pandas()
    assert list(out.columns) == ["id", "prediction", "score", "decision"]
    assert out["id"].tolist() == list(range(len(frame)))
    labels = out["prediction"].to_numpy()
    np.testing.assert_array_equal(labels, model.predict(frame))
    assert set(np.unique(labels)) == {-1, 1}  # both kinds of rows are checked
    assert _rel(out["score"].to_numpy(), model.score_samples(frame)) <= REL
    assert _rel(out["decision"].to_numpy(), model.decision_function(frame)) <= REL
    assert ((out["decision"] < 0) == (labels == -1)).all()


def test_an_input_column_named_like_a_score_is_refused_before_scoring(detector, tmp_path, capsys):
    _, frame, bundle = detector
    src = tmp_path / "rows.csv"
    frame.assign(score=1.0).to_csv(src, index=False)

    assert main(["predict", str(src), "-o", str(tmp_path / "out.csv"), "--model", str(bundle),
                 "--no-progress"]) != 0

    assert "already has a column 'score'" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
