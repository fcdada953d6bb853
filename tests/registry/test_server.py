"""Against a real ``mlflow server`` process (MLFLOW_TRACKING_URI=http://...): register with an alias, resolve,
fetch the bundle through the server's artifact proxy, move the alias with the CLI, retrain and promote."""

from __future__ import annotations

from pathlib import Path

import pytest

from tabserve.cli import main
from tabserve.core.bundle import read_bundle
from tabserve.registry import open_source
from tabserve.registry.mlflow import client
from tabserve.training.publish import register_bundle
from tests.registry.stores import mlflow_server, server_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not server_available(), reason="mlflow server needs mlflow-skinny, flask and flask-cors "
                                                      "(pip install -e '.[dev]')"),
]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


def test_register_resolve_fetch_and_move_the_alias_through_a_server(server, tmp_path, monkeypatch, demo_bundle,
                                                                   iris_bundle, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    home = tmp_path / "home"
    first = register_bundle(demo_bundle, "served", alias="champion", home=home)
    second = register_bundle(iris_bundle, "served", home=home)
    assert (first.version, second.version) == ("1", "2")
    assert not (home / "mlflow").exists()  # nothing of the embedded store: the server has it all

    source = open_source("models:/served@champion", home=home)
    resolved = source.resolve()
    assert resolved.version == "1"
    folder = source.fetch(resolved)
    assert folder == home / "cache" / "mlflow" / "served" / "1"
    assert files(folder) == files(demo_bundle)
    version = client(server).get_model_version("served", "1")
    assert version.source.startswith("mlflow-artifacts:/")  # the bundle went through the server's proxy
    assert version.tags["tabserve.sha256"] == read_bundle(demo_bundle).manifest.model.sha256

    assert main(["registry", "alias", "served", "champion", "2", "--home", str(home)]) == 0
    assert "served@champion -> version 2 (was version 1)" in capsys.readouterr().out
    moved = source.resolve()
    assert moved.version == "2"
    assert files(source.fetch(moved)) == files(iris_bundle)


def test_retrain_promotes_through_a_server(server, tmp_path, monkeypatch, capsys):
    from tests.training.test_retrain import diabetes_files

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    home = tmp_path / "home"
    small, full = diabetes_files(tmp_path)
    assert main(["train", str(small), "--target", "target", "--estimator", "linear", "--home", str(home),
                 "--register", "diabetes", "--alias", "champion"]) == 0
    assert main(["retrain", "diabetes", "--data", str(full), "--home", str(home)]) == 0
    assert "decision: PROMOTED" in capsys.readouterr().out
    assert open_source("models:/diabetes@champion", home=home).resolve().version == "2"
    tags = client(server).get_model_version("diabetes", "2").tags
    assert tags["tabserve.retrain.decision"] == "promoted"
