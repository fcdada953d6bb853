"""Parity: the export must reproduce sklearn within tolerance, or nothing is written."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tabserve.errors import ExportError
from tabserve.training import train_file
from tabserve.training.parity import Outputs, compare


def test_zero_tolerance_refuses_a_random_forest(cli, capsys, data_dir, tmp_path):
    home = tmp_path / "home"
    code = cli("train", data_dir / "diabetes.csv", "--target", "target", "--rtol", "0", "--atol", "0",
               "--home", home)
    err = capsys.readouterr().err.splitlines()[-1]
    assert code == 2
    assert err.startswith("tabserve train: error: the ONNX export does not reproduce the model")
    assert "(rtol=0, atol=0)" in err and "Nothing was written" in err
    worst = re.search(r"Worst rows \(numbered from 0 in the data\): row (\d+): sklearn ([\d.]+), onnx", err)
    assert worst is not None and 0 <= int(worst.group(1)) < 442
    assert not home.exists()


def test_export_error_carries_the_worst_row(data_dir, tmp_path):
    with pytest.raises(ExportError) as caught:
        train_file(data_dir / "breast_cancer.parquet", "target", estimator="gradient_boosting",
                   rtol=0, atol=0, dest=tmp_path / "out", params={"n_estimators": 5})
    assert "rows differ by more than" in caught.value.message and "p=[" in caught.value.message
    assert isinstance(caught.value.context["row"], int)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_compare_counts_rows_and_puts_label_mismatches_first():
    expected = Outputs(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [1.0, 0.0]]))
    actual = Outputs(np.array([0, 0, 1, 0]), np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]],
                                                      dtype=np.float32))
    parity = compare(expected, actual, np.array([10, 11, 12, 13]), rtol=1e-4, atol=1e-4)
    assert parity.label_mismatches == 1 and parity.rows_over_tolerance == 2 and not parity.passed
    assert parity.worst_rows[:2] == [11, 13]  # the label mismatch, then the largest difference
    assert parity.max_abs_diff == pytest.approx(0.1, abs=1e-6)
    assert parity.max_rel_diff > 1e30  # 0.1 against an expected 0.0


def test_compare_within_tolerance_passes():
    expected = Outputs(np.array([100.0, -2.0, 0.0]))
    actual = Outputs(np.array([[100.005], [-2.0001], [0.00005]], dtype=np.float32))
    parity = compare(expected, actual, np.arange(3), rtol=1e-4, atol=1e-4)
    assert parity.passed and parity.rows_checked == 3 and parity.label_mismatches == 0
    assert parity.manifest()["passed"] is True and parity.manifest()["checked_on"] == "holdout"
    parity.require()
