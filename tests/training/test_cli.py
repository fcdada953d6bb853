"""`tabserve train` as a user runs it: help, usage errors, progress and summary, the missing extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tabserve.training import options


def test_help_describes_every_flag(cli, capsys):
    with pytest.raises(SystemExit) as done:
        cli("train", "--help")
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--demo", "--target", "--task", "--estimator", "--features", "--name", "--out", "--home",
                 "--test-size", "--seed", "--rtol", "--atol", "--overwrite"):
        assert flag in text
    assert "examples:" in text and "tabserve train --demo" in text and "pip install 'tabserve[train]'" in text
    assert all(name in text for name in options.ESTIMATORS)


@pytest.mark.parametrize(("argv", "message"), [
    ((), "give a DATA file and its --target column, or --demo"),
    (("data.csv",), "--target is required with data.csv"),
    (("--demo", "--target", "y"), ("--demo trains the demo model and takes only --out, --home and "
                                   "--overwrite; remove --target")),
])
def test_usage_errors(cli, capsys, argv, message):
    assert cli("train", *argv) == 2
    assert capsys.readouterr().err.startswith(f"tabserve train: error: {message}")


@pytest.mark.parametrize("argv", [("--test-size", "1.5"), ("--rtol", "-1"), ("--atol", "nan"),
                                  ("--name", "../x"), ("--features", "a,,b"), ("--estimator", "svm")])
def test_bad_option_values(cli, capsys, argv):
    with pytest.raises(SystemExit) as done:
        cli("train", "data.csv", "--target", "y", *argv)
    assert done.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_train_file_prints_progress_and_summary(cli, capsys, data_dir, tmp_path):
    code = cli("train", data_dir / "iris.csv", "--target", "species", "--estimator", "linear",
               "--name", "flowers", "--home", tmp_path)
    out, err = capsys.readouterr()
    assert code == 0
    assert err.splitlines()[0].startswith("[1/6] +") and "reading iris.csv (150 rows, 5 columns)" in err
    assert "classification: target 'species' is not numeric" in err and "[6/6]" in err
    bundle = tmp_path / "models" / "flowers" / "1"
    assert out.startswith("trained flowers:1 (classification, linear) in ")
    assert f"bundle:   {bundle}" in out and "accuracy=" in out
    assert "parity:   passed on 30 holdout rows" in out


def test_train_demo(cli, capsys, tmp_path):
    assert cli("train", "--demo", "--out", tmp_path / "demo") == 0
    out = capsys.readouterr().out
    assert out.startswith("trained demo:1 (regression, random_forest)") and "r2=" in out
    assert (tmp_path / "demo" / "model.onnx").is_file()


def test_missing_training_extra(cli, capsys, monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "sklearn", None)
    for name in [m for m in sys.modules if m.startswith("tabserve.training.")]:
        if name != "tabserve.training.options":
            monkeypatch.delitem(sys.modules, name)
    assert cli("train", "--demo", "--home", tmp_path) == 2
    err = capsys.readouterr().err
    assert "'sklearn' is not installed: pip install 'tabserve[train]'" in err
    assert not any(tmp_path.iterdir())


def test_import_tabserve_stays_light():
    code = ("import sys, tabserve, tabserve.cli.train, tabserve.training; "
            "heavy = {'sklearn', 'skl2onnx', 'pandas', 'onnx'}; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
