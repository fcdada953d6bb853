"""`tabserve train/import --register`, `tabserve registry list/alias/ui` as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_diabetes

from tabserve.cli import main
from tabserve.registry import open_source
from tests.registry.stores import fresh_home

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


@pytest.fixture
def diabetes_csv(tmp_path):
    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_help_texts_name_every_action_and_flag(capsys):
    with pytest.raises(SystemExit) as done:
        cli("registry", "--help")
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("list", "alias", "ui", "MLFLOW_TRACKING_URI", "HOME/mlflow/mlflow.db",
                 "tabserve registry alias houses champion 3"):
        assert word in text
    with pytest.raises(SystemExit):
        cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--register NAME" in text and "--alias ALIAS" in text
    assert "tabserve train houses.csv --target price --register houses --alias champion" in text
    with pytest.raises(SystemExit):
        cli("import", "--help")
    assert "--register NAME" in capsys.readouterr().out


def test_train_registers_and_the_registry_lists_it(registry_home, diabetes_csv, capsys):
    assert cli("train", diabetes_csv, "--target", "target", "--estimator", "linear", "--register", "diabetes",
               "--alias", "champion") == 0
    out = capsys.readouterr().out
    assert "registry: diabetes version 1 (alias champion)" in out
    assert "serve:    tabserve serve models:/diabetes@champion" in out
    assert cli("train", diabetes_csv, "--target", "target", "--estimator", "linear", "--seed", "7",
               "--register", "diabetes") == 0
    assert "registry: diabetes version 2\n" in capsys.readouterr().out
    assert open_source("models:/diabetes@champion", home=registry_home).resolve().version == "1"

    assert cli("registry", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSIONS", "LATEST", "ALIASES"]
    assert lines[1].split() == ["diabetes", "2", "2", "champion->1"]

    assert cli("registry", "list", "diabetes") == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert list(rows) == ["2", "1"]  # newest first
    assert "champion" in rows["1"] and "champion" not in rows["2"]
    assert re.search(r"r2=0\.\d+\s+rmse=\d+", rows["1"])


def test_alias_moves_and_rolls_back(registry_home, demo_bundle, iris_bundle, capsys):
    from tabserve.training.publish import register_bundle

    register_bundle(demo_bundle, "m", alias="champion", home=registry_home)
    register_bundle(iris_bundle, "m", home=registry_home)
    assert cli("registry", "alias", "m", "champion", "2") == 0
    assert capsys.readouterr().out.strip() == "m@champion -> version 2 (was version 1)"
    assert open_source("models:/m@champion", home=registry_home).resolve().version == "2"
    assert cli("registry", "alias", "m", "champion", "1") == 0  # roll back
    assert open_source("models:/m@champion", home=registry_home).resolve().version == "1"
    assert cli("registry", "alias", "m", "challenger", "2") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "m@challenger -> version 2 (new alias)"

    assert cli("registry", "alias", "m", "champion", "9") == 2
    assert "model 'm' has no version 9" in capsys.readouterr().err
    assert open_source("models:/m@champion", home=registry_home).resolve().version == "1"
    assert cli("registry", "list", "nope") == 2
    assert "there is no model 'nope'" in capsys.readouterr().err


def test_bad_arguments_are_refused_before_training(registry_home, diabetes_csv, capsys):
    with pytest.raises(SystemExit) as done:
        cli("registry", "alias", "m", "latest", "1")
    assert done.value.code == 2
    assert "MLflow reserves" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("registry", "alias", "m", "champion", "v2")
    assert "is not a version number" in capsys.readouterr().err
    assert cli("train", diabetes_csv, "--target", "target", "--alias", "champion") == 2
    assert "--alias needs --register NAME" in capsys.readouterr().err
    assert not (registry_home / "models").exists()  # nothing trained


def test_ui_prints_the_command_for_the_embedded_store(registry_home, capsys):
    assert cli("registry", "ui", "--print", "--port", "5055") == 0
    out = capsys.readouterr().out.strip()
    home = registry_home.resolve()
    assert out == (f"mlflow ui --backend-store-uri sqlite:///{home}/mlflow/mlflow.db --host 127.0.0.1 "
                   f"--port 5055 --workers 1 --default-artifact-root {home}/mlflow/artifacts")


def test_ui_of_a_server_is_the_server(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert cli("registry", "ui") == 0
    assert "its UI is at http://127.0.0.1:5000" in capsys.readouterr().out


def test_the_cli_imports_mlflow_only_when_a_registry_command_runs():
    code = ("import sys; from tabserve.cli import build_parser; build_parser().parse_args(['registry', 'list']); "
            "import tabserve.registry, tabserve.api.app; print(sorted(m for m in sys.modules if 'mlflow' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
