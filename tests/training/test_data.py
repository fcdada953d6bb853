"""Bad training data: one clear error naming the file and the column, exit code 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tabserve
from tabserve.errors import DataError
from tabserve.training import train_file
from tabserve.training.data import MIN_ROWS


def _fails(cli: Callable[..., int], capsys: pytest.CaptureFixture[str], home: Path, *argv: object) -> str:
    code = cli("train", *argv, "--home", home)
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress lines
    assert code == 2
    assert last.startswith("tabserve train: error: ")
    assert not home.exists(), "nothing may be written for bad data"
    return last


def test_missing_file(cli, capsys, tmp_path):
    err = _fails(cli, capsys, tmp_path / "home", tmp_path / "nope.csv", "--target", "y")
    assert "nope.csv: no such file" in err


def test_unsupported_extension(cli, capsys, tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04")
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert "data.xlsx: unsupported file type '.xlsx'" in err and ".csv" in err and ".parquet" in err


@pytest.mark.parametrize("content", ["", "\n\n", "a,b,y\n"])
def test_empty_file(cli, capsys, tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert "empty.csv" in err and ("is empty" in err or "has no data rows" in err)


def test_unreadable_parquet(cli, capsys, tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet at all")
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert "broken.parquet cannot be read as PARQUET" in err


def test_missing_target_lists_columns(cli, capsys, tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "price")
    assert "data.csv has no column 'price'" in err and "'a', 'b', 'y', 'label'" in err


def test_unknown_feature(cli, capsys, tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y", "--features", "a,zzz")
    assert "no column(s) 'zzz'" in err and "--features" in err


def test_target_among_features(cli, capsys, tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y", "--features", "a,y")
    assert "'y' is the target" in err


def test_numbers_with_a_stray_text_value(cli, capsys, tmp_path, small_frame):
    small_frame["b"] = small_frame["b"].astype(object)
    small_frame.loc[7, "b"] = "n/a?"
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert "feature column 'b' in data.csv is mostly numbers but not numeric (object)" in err
    assert "row 7 holds 'n/a?'" in err and "--features" in err


def test_text_feature_column_is_categorical(tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    result = train_file(path, "y", estimator="linear", home=tmp_path / "home")
    label = result.manifest.features[-1]
    assert (label.name, label.kind, label.dtype, label.stats) == ("label", "categorical", "str", None)
    assert label.categories == ["no", "yes"] and label.handle_unknown == "error" and not label.allow_missing
    assert result.manifest.categorical_input is not None and result.manifest.categorical_input.shape == [None, 1]
    assert result.manifest.input is not None and result.manifest.input.shape == [None, 2]
    assert result.manifest.parity is not None and result.manifest.parity.probes["categories"] == 2


def test_a_pandas_category_column_is_categorical(tmp_path, small_frame):
    small_frame["label"] = small_frame["label"].astype("category")
    small_frame.to_parquet(path := tmp_path / "data.parquet", index=False)
    result = train_file(path, "y", estimator="linear", unknown_category="ignore", home=tmp_path / "home")
    label = result.manifest.features[-1]
    assert (label.kind, label.categories, label.handle_unknown) == ("categorical", ["no", "yes"], "ignore")
    assert result.manifest.parity is not None and result.manifest.parity.probes["categories"] == 3  # + unseen


def test_a_text_column_without_values(cli, capsys, tmp_path, small_frame):
    # Some missing text values are a category of their own (tests/training/test_text_missing.py); all are none.
    small_frame["note"] = pd.Series([None] * len(small_frame), dtype=object)
    small_frame.to_parquet(path := tmp_path / "data.parquet", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y", "--features", "a,b,note")
    assert "categorical feature column 'note' in data.parquet has no values" in err


def test_too_many_categories(cli, capsys, tmp_path, small_frame):
    small_frame["id"] = [f"user-{i}" for i in range(len(small_frame))]
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tabserve.training.data.MAX_CATEGORIES", 30)
        err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert "categorical feature column 'id' in data.csv has 40 distinct values" in err and "at most 30" in err


def test_infinite_feature_values_are_refused(cli, capsys, tmp_path, small_frame):
    small_frame.loc[[3, 11, 12], "a"] = np.nan
    small_frame.loc[30, "a"] = np.inf
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")  # random_forest: NaN is fine
    assert "feature column 'a' in data.csv has 1 infinite value(s) (rows 30)" in err


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "random_forest"])
def test_missing_values_are_kept_for_estimators_that_take_them(estimator, tmp_path, small_frame):
    small_frame.loc[[3, 11, 12, 25], "a"] = np.nan
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    params = {"max_iter": 5} if estimator == "hist_gradient_boosting" else {"n_estimators": 5}
    result = train_file(path, "y", estimator=estimator, home=tmp_path / "home", params=params)
    a, b = result.manifest.features
    # HistGradientBoosting routes a missing value in any feature; a random forest only in those that had some
    assert a.allow_missing and b.allow_missing == (estimator == "hist_gradient_boosting")
    assert a.stats is not None and a.stats.missing + a.stats.count == 32  # the training split
    assert result.manifest.parity is not None
    assert result.manifest.parity.probes["missing"] == (2 if estimator == "hist_gradient_boosting" else 1)


def test_too_few_rows(cli, capsys, tmp_path, small_frame):
    small_frame.head(MIN_ROWS - 1).to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert f"data.csv has {MIN_ROWS - 1} data rows; at least {MIN_ROWS} are needed" in err


def test_minimum_rows_train(tmp_path, small_frame):
    small_frame.head(MIN_ROWS).drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    result = train_file(path, "y", estimator="linear", home=tmp_path / "home")
    assert result.manifest.training["rows_train"] + result.manifest.training["rows_holdout"] == MIN_ROWS


def test_rows_without_a_target_value_are_left_out(cli, capsys, tmp_path, small_frame):
    small_frame.loc[[5, 9], "y"] = np.nan
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    assert cli("train", path, "--target", "y", "--home", tmp_path / "home", "--out", tmp_path / "b") == 0
    assert "dropped 2 row(s) without a target value (rows 5, 9)" in capsys.readouterr().err
    training = tabserve.load(tmp_path / "b").manifest.training
    assert training["rows_train"] + training["rows_holdout"] == 38 and training["rows_without_target"] == 2


def test_too_few_rows_with_a_target_value(cli, capsys, tmp_path, small_frame):
    small_frame.loc[:MIN_ROWS, "y"] = np.nan
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y")
    assert f"data.csv has {40 - MIN_ROWS - 1} data rows with a target value ({MIN_ROWS + 1} more have none)" in err


def test_single_class(cli, capsys, tmp_path, small_frame):
    small_frame["label"] = "yes"
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "label", "--features", "a,b")
    assert "target column 'label' in data.csv has a single class ('yes')" in err


def test_class_with_one_row(cli, capsys, tmp_path, small_frame):
    small_frame.loc[0, "label"] = "maybe"
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "label", "--features", "a,b")
    assert "'maybe' (1 row)" in err and "fewer than 2 rows" in err


def test_regression_on_text_target(cli, capsys, tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "label", "--features", "a,b",
                 "--task", "regression")
    assert "target column 'label' in data.csv is not numeric" in err and "--task classification" in err


def test_classification_on_fractional_target(cli, capsys, tmp_path, small_frame):
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    err = _fails(cli, capsys, tmp_path / "home", path, "--target", "y", "--task", "classification")
    assert "target column 'y' in data.csv holds fractional numbers (row 0" in err


def test_holdout_too_small_for_classes(tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    with pytest.raises(DataError, match="both need each of the 2 classes; adjust --test-size"):
        train_file(path, "label", features=["a", "b"], test_size=0.01, home=tmp_path / "home")
    assert not (tmp_path / "home").exists()


def test_constant_column_is_fine(tmp_path, small_frame):
    small_frame["const"] = 1.5
    small_frame.drop(columns="label").to_csv(path := tmp_path / "data.csv", index=False)
    result = train_file(path, "y", estimator="linear", home=tmp_path / "home")
    stats = next(f.stats for f in result.manifest.features if f.name == "const")
    assert stats is not None and stats.std == 0.0 and stats.min == stats.max == 1.5


def test_tsv_and_sanitised_name(tmp_path, small_frame):
    path = tmp_path / "my data (v2).tsv"
    small_frame.drop(columns="label").to_csv(path, sep="\t", index=False)
    result = train_file(path, "y", estimator="linear", home=tmp_path / "home")
    assert result.manifest.name == "my-data-v2"
    assert result.path == tmp_path / "home" / "models" / "my-data-v2" / "1"


def test_features_keep_their_order(tmp_path, small_frame):
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    result = train_file(path, "y", features=["b", "a"], estimator="linear", home=tmp_path / "home")
    assert result.manifest.feature_names == ["b", "a"]
    assert [f.dtype for f in result.manifest.features] == ["float64", "float64"]


def test_bool_target_is_classification_with_int_labels(tmp_path, small_frame):
    frame = pd.DataFrame({"a": small_frame["a"], "b": small_frame["b"], "flag": small_frame["a"] > 0})
    frame.to_parquet(path := tmp_path / "flags.parquet", index=False)
    messages: list[str] = []
    result = train_file(path, "flag", estimator="linear", home=tmp_path / "home", progress=messages.append)
    assert any("classification: target 'flag' is boolean" in m for m in messages)
    assert result.manifest.classes == [0, 1]
    assert result.manifest.target is not None and result.manifest.target.dtype == "bool"


def test_rare_class_missing_from_training(tmp_path, small_frame):
    small_frame.loc[[0, 1], "label"] = "rare"
    small_frame.to_csv(path := tmp_path / "data.csv", index=False)
    with pytest.raises(DataError, match=r"no training row has class.*'rare'; lower --test-size"):
        train_file(path, "label", features=["a", "b"], test_size=0.9, home=tmp_path / "home")
    assert not (tmp_path / "home").exists()
