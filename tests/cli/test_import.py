"""`tabserve import` as a user runs it: help, progress and summary, versions, the pickle opt-in, exit codes."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import tabserve
from tabserve.cli import main

lgb = pytest.importorskip("lightgbm")


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """diabetes.csv (10 features + 'target'), a LightGBM text model and a joblib pipeline trained on it."""
    folder = tmp_path_factory.mktemp("import")
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(folder / "diabetes.csv", index=False)
    X, y = frame.drop(columns="target"), frame["target"]
    lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 10) \
        .save_model(folder / "houses.txt")
    pipeline = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=3, max_depth=4, random_state=0))
    joblib.dump(pipeline.fit(X, y), folder / "pipeline.joblib")
    return {"sample": folder / "diabetes.csv", "lightgbm": folder / "houses.txt",
            "pipeline": folder / "pipeline.joblib"}


def test_help_describes_every_flag_and_the_pickle_risk(capsys):
    with pytest.raises(SystemExit) as done:
        cli("import", "--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("MODEL_FILE", "--sample", "--target", "--trust-pickle", "--classes", "--task", "--name", "--out",
                 "--home", "--rtol", "--atol", "--overwrite"):
        assert flag in text
    assert "unpickling runs arbitrary code from the file" in text
    assert "examples:" in text and "tabserve import houses.txt --sample houses.csv --target price" in text
    with pytest.raises(SystemExit):
        cli("--help")
    assert "import a LightGBM, XGBoost or (with --trust-pickle) scikit-learn model" in \
        " ".join(capsys.readouterr().out.split())


def test_import_prints_progress_and_summary_and_counts_versions(files, capsys, tmp_path):
    assert cli("import", files["lightgbm"], "--sample", files["sample"], "--target", "target",
               "--home", tmp_path) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("[1/5] +") and "reading houses.txt (lightgbm-text, sha256 " in err
    assert "lightgbm.Booster (objective regression): regression; sample diabetes.csv (442 rows, 11 columns)" in err
    assert "[5/5]" in err
    bundle = tmp_path / "models" / "houses" / "1"
    assert out.startswith("imported houses:1 (regression, lightgbm.Booster (objective regression)) from "
                          "houses.txt (lightgbm-text) in ")
    assert f"bundle:   {bundle}" in out and "r2=" in out and "(442 sample rows)" in out
    assert "parity:   passed on 442 sample + " in out
    # the ensemble adds LightGBM's trees itself: in order on one thread, ~1e-16 apart on several
    assert float(re.search(r"max rel diff (\S+) ", out).group(1)) <= 1e-9
    assert tabserve.load(bundle).manifest.training["imported_from"] == "houses.txt"

    assert cli("import", files["lightgbm"], "--sample", files["sample"], "--target", "target",
               "--home", tmp_path, "--name", "houses") == 0
    assert (tmp_path / "models" / "houses" / "2" / "tabserve.json").is_file()


def test_a_pickle_needs_trust_pickle(files, capsys, tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    for path in (tmp_path / "model.pkl", files["pipeline"]):
        assert cli("import", path, "--sample", files["sample"], "--home", tmp_path / "home") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tabserve import: error: {path.name} is a pickle (.")
        assert "unpickling runs arbitrary code from the file" in err and "--trust-pickle" in err
    assert not marker.exists() and not (tmp_path / "home").exists()

    assert cli("import", files["pipeline"], "--sample", files["sample"], "--target", "target", "--trust-pickle",
               "--home", tmp_path / "home") == 0
    out = capsys.readouterr().out
    assert "imported pipeline:1 (regression, Pipeline(StandardScaler, RandomForestRegressor)) from " \
           "pipeline.joblib (pickle)" in out
    frame = pd.read_csv(files["sample"]).drop(columns="target")
    model = tabserve.load(tmp_path / "home" / "models" / "pipeline" / "1")
    assert model.predict(frame.to_numpy()).tolist() == pytest.approx(
        joblib.load(files["pipeline"]).predict(frame).tolist(), rel=1e-9, abs=0)


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


@pytest.mark.parametrize(("argv", "message"), [
    (("--sample", "{sample}", "--out", "{tmp}"), "already exists; choose another folder (--out) or replace it"),
    (("--sample", "{sample}", "--out", "{tmp}/b"),
     "has column(s) 'target' the model does not take (if one of them is the target, name it with --target)"),
    (("--sample", "{sample}", "--target", "target", "--classes", "a,b", "--out", "{tmp}/b"),
     "--classes is for classifiers"),
    (("--sample", "{tmp}/none.csv", "--out", "{tmp}/b"), "none.csv: no such file"),
])
def test_errors_exit_2_and_write_nothing(argv, message, files, capsys, tmp_path):
    args = [a.format(sample=files["sample"], tmp=tmp_path) for a in argv]
    assert cli("import", files["lightgbm"], *args) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress lines of the steps that ran
    assert last.startswith("tabserve import: error: ") and message in last
    assert not (tmp_path / "b").exists()


def test_an_unknown_model_format(files, capsys, tmp_path):
    assert cli("import", files["sample"], "--sample", files["sample"], "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert err.startswith("tabserve import: error: diabetes.csv: unknown model format")
    assert "booster.save_model('model.txt')" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv", [(), ("--sample", "s.csv", "--classes", "a"), ("--sample", "s.csv", "--task", "x"),
                                  ("--sample", "s.csv", "--rtol", "-1")])
def test_bad_usage(argv, capsys):
    with pytest.raises(SystemExit) as done:
        cli("import", "model.txt", *argv)
    assert done.value.code == 2
    assert "tabserve import: error:" in capsys.readouterr().err
