"""PSI against the manifest's training quantiles over a ring of recent rows."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tabserve.observability.drift import (
    DriftReference,
    DriftWindow,
    _bins,
    drift_by_version,
    shared_windows,
    training_sample,
)
from tests.observability.scrape import total

ROWS = 1000


@pytest.fixture(scope="module")
def reference(demo_model) -> DriftReference:
    ref = DriftReference.from_manifest(demo_model.manifest)
    assert ref is not None
    return ref


def window_of(reference: DriftReference, rows: np.ndarray, size: int = ROWS) -> np.ndarray:
    window = DriftWindow(reference, size)
    window.record(rows)
    return window.rows()


def test_the_reference_is_every_numeric_feature_with_shares_that_sum_to_one(reference, demo_model):
    assert reference.features == demo_model.manifest.feature_names and reference.columns is None
    for edges, shares in zip(reference.edges, reference.shares, strict=True):
        assert edges == sorted(edges) and len(shares) == len(edges) + 2
        assert sum(shares) == pytest.approx(1.0)
        assert shares[0] == 0 and shares[-1] == 0  # nothing below the training minimum, nothing missing


def test_psi_is_near_zero_for_rows_from_the_training_distribution(reference, demo_model):
    rows = training_sample(demo_model.manifest, ROWS, seed=1)
    psi = reference.psi(window_of(reference, rows))
    assert psi.shape == (5,) and (psi < 0.05).all(), psi


def test_psi_is_large_for_shifted_rows_and_names_the_feature(reference, demo_model):
    rows = training_sample(demo_model.manifest, ROWS, seed=2)
    rows[:, 2] += 1.0  # about one training standard deviation
    psi = reference.psi(window_of(reference, rows))
    assert psi[2] > 0.5, psi
    assert (np.delete(psi, 2) < 0.05).all(), psi


def test_the_window_keeps_only_the_most_recent_rows(reference, demo_model):
    window = DriftWindow(reference, ROWS)
    window.record(training_sample(demo_model.manifest, 1500, seed=3) + 2.0)
    assert reference.psi(window.rows()).min() > 1
    normal = training_sample(demo_model.manifest, ROWS, seed=4)
    window.record(normal[:350])
    window.record(normal[350:700])  # wraps around the end of the ring
    assert reference.psi(window.rows()).min() > 0.1  # 300 shifted rows are still there
    for row in normal[700:]:
        window.record(row[None, :])  # one-row batches, the usual hot path
    assert {tuple(r) for r in window.rows()} == {tuple(r) for r in normal}
    assert (reference.psi(window.rows()) < 0.05).all()


def test_no_rows_no_psi(reference):
    assert np.isnan(reference.psi(np.empty((0, 5)))).all()


def test_a_discrete_feature_puts_a_repeated_value_in_one_bin():
    probs = [0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1]
    edges, shares = _bins(probs, [0.0] * 6 + [1.0] * 5, missing=0, count=100)
    assert edges == [0.0, 1.0]
    assert shares == pytest.approx([0.0, 0.75, 0.25, 0.0])
    ref = DriftReference("m", "1", ["flag"], None, [edges], [shares])
    same = np.array([[0.0]] * 72 + [[1.0]] * 28)
    assert ref.psi(same)[0] < 0.01
    assert ref.psi(np.array([[1.0]] * 100))[0] > 1


def test_missing_values_have_their_own_bin():
    edges, shares = _bins([0, 0.5, 1], [0.0, 1.0, 2.0], missing=25, count=75)
    assert shares[-1] == pytest.approx(0.25) and sum(shares) == pytest.approx(1.0)
    ref = DriftReference("m", "1", ["x"], None, [edges], [shares])
    rows = np.array([[np.nan]] * 25 + [[0.5]] * 38 + [[1.5]] * 37)
    assert ref.psi(rows)[0] < 0.01
    assert ref.psi(np.array([[0.5]] * 100))[0] > 0.3


def test_windows_shared_through_files_add_up_across_workers(reference, demo_model, tmp_path):
    mine = DriftWindow(reference, 100, tmp_path)
    mine.record(training_sample(demo_model.manifest, 60, seed=6))
    # another worker's window: the same files under another live pid (this process's parent)
    (tmp_path / "other").mkdir()
    theirs = DriftWindow(reference, 100, tmp_path / "other")
    theirs.record(training_sample(demo_model.manifest, 150, seed=7) + 3)
    for path in (tmp_path / "other").iterdir():
        path.rename(tmp_path / path.name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-"))
    (reference_read, rows, psi), = drift_by_version(shared_windows(tmp_path))
    assert (reference_read.model, reference_read.version, rows) == ("demo", "1", 160)  # 60 + the last 100
    assert (psi > 0.5).all()
    mine.close()
    assert len(list(tmp_path.glob("drift-*"))) == 2  # only the other worker's files are left
    # a worker that died without cleaning up no longer counts
    for path in tmp_path.glob("drift-*"):
        path.rename(path.with_name(path.name.replace(f"-{os.getppid()}-", "-999999999-")))
    assert drift_by_version(shared_windows(tmp_path)) == []


def test_drift_is_exposed_per_feature_after_requests(client):
    for row in np.random.default_rng(8).normal(size=(30, 5)).round(4).tolist():
        client.post("/api/v1/predict", json={"data": row})
    text = client.get("/metrics").text
    assert total(text, "tabserve_drift_window_rows", model="demo", version="1") == 30
    for i in range(5):
        assert total(text, "tabserve_feature_psi", model="demo", version="1", feature=f"feature_{i}") >= 0


def test_drift_off_with_a_window_of_zero(make_client, demo_model):
    with make_client(demo_model, drift_window_rows=0) as client:
        client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]})
        text = client.get("/metrics").text
    assert "tabserve_feature_psi{" not in text and "tabserve_drift_window_rows{" not in text
