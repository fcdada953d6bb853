"""Parity: the export must reproduce the model within tolerance, or nothing is written."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tabserve.errors import ExportError
from tabserve.training import train_file, trainer
from tabserve.training.export import export_skl2onnx
from tabserve.training.parity import Outputs, compare


@pytest.fixture
def float32_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train with skl2onnx's float32 graph instead of the exact one: it cannot meet the 1e-9 default."""
    monkeypatch.setattr(trainer, "export_onnx",
                        lambda model, features, task: export_skl2onnx(model, len(features), task))


def test_a_float32_export_is_refused_naming_the_worst_rows(float32_export, cli, capsys, data_dir, tmp_path):
    home = tmp_path / "home"
    code = cli("train", data_dir / "diabetes.csv", "--target", "target", "--home", home)
    lines = capsys.readouterr().err.splitlines()  # older skl2onnx releases also print warnings
    err = next((line for line in lines if line.startswith("tabserve train: error:")), lines[-1])
    assert code == 2
    assert err.startswith("tabserve train: error: the ONNX export does not reproduce the model")
    assert "(rtol=1e-09, atol=1e-12)" in err and "Nothing was written" in err
    assert re.search(r"of 2089 rows \(89 holdout, 2000 adversarial\) differ by more than", err)
    worst = re.search(r"Worst rows \(numbered from 0 in the data\): (adversarial row: holdout row \d+ with '\w+' = "
                      r"[-\d.e]+ \(split threshold\)|row \d+): expected ([\d.]+), onnx ([\d.]+)", err)
    assert worst is not None and worst.group(2) != worst.group(3)
    assert not home.exists()


def test_export_error_carries_the_worst_row(float32_export, data_dir, tmp_path):
    with pytest.raises(ExportError) as caught:
        train_file(data_dir / "breast_cancer.parquet", "target", estimator="gradient_boosting",
                   dest=tmp_path / "out", params={"n_estimators": 5})
    assert "differ by more than" in caught.value.message and "p=[" in caught.value.message
    assert isinstance(caught.value.context.get("row"), int) or "adversarial row" in caught.value.message
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_adversarial_rows_catch_flips_that_the_holdout_misses(float32_export, data_dir, tmp_path):
    """The float32 graph passed the old holdout-only check at 1e-4; at split thresholds it predicts
    another leaf."""
    with pytest.raises(ExportError) as caught:
        train_file(data_dir / "diabetes.csv", "target", rtol=1e-4, atol=1e-4, dest=tmp_path / "out",
                   params={"n_estimators": 10})
    message = caught.value.message
    assert "Worst rows (numbered from 0 in the data): adversarial row: holdout row" in message
    assert "(split threshold): expected" in message


def test_compare_counts_rows_and_puts_label_mismatches_first():
    expected = Outputs(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [1.0, 0.0]]))
    actual = Outputs(np.array([0, 0, 1, 0]), np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]))
    parity = compare(expected, actual, [10, 11, 12, "holdout row 3 with 'x' = 0.5 (split threshold)"],
                     rtol=1e-4, atol=1e-4)
    assert parity.label_mismatches == 1 and parity.rows_over_tolerance == 2 and not parity.passed
    assert parity.worst_rows == [11]  # the label mismatch; the next worst row is adversarial
    assert parity.worst_details[1] == ("adversarial row: holdout row 3 with 'x' = 0.5 (split threshold): "
                                       "expected 0 p=[1.0, 0.0], onnx 0 p=[0.9, 0.1] (diff 0.1)")
    assert parity.max_abs_diff == pytest.approx(0.1)
    assert parity.max_rel_diff > 1e300  # 0.1 against an expected 0.0


def test_compare_within_tolerance_passes():
    expected = Outputs(np.array([100.0, -2.0, 0.0]))
    actual = Outputs(np.array([[100.0 + 1e-8], [-2.0], [1e-13]]))
    parity = compare(expected, actual, np.arange(3), rtol=1e-9, atol=1e-12)
    assert parity.passed and parity.rows_checked == 3 and parity.label_mismatches == 0
    assert parity.manifest()["passed"] is True and parity.manifest()["checked_on"] == "holdout"
    parity.require()


def test_nan_on_both_sides_is_equal_and_on_one_side_is_not():
    expected = Outputs(np.array([np.nan, 1.0]))
    assert compare(expected, Outputs(np.array([np.nan, 1.0])), [0, 1], rtol=0, atol=0).passed
    failed = compare(expected, Outputs(np.array([0.0, 1.0])), [0, 1], rtol=0, atol=0)
    assert not failed.passed and failed.worst_rows == [0] and failed.max_abs_diff == np.inf
