"""The MLflow source on the embedded SQLite store: resolve aliases/versions/latest, fetch byte-identical bundles
into the cache, reuse it, see alias moves, and fail with tabserve errors that say what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tabserve.core.bundle import read_bundle
from tabserve.errors import BundleError, ConfigError, ModelNotFound
from tabserve.registry import ResolvedVersion, open_source
from tabserve.registry.mlflow import MlflowSource, client, parse_uri, tracking_uri
from tabserve.training.publish import register_bundle
from tests.registry.stores import fresh_home
from tests.servers import free_port

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tracking_uri_is_the_embedded_sqlite_store_unless_the_environment_names_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert (tmp_path / "mlflow").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/houses@champion", ("houses", None, "champion")),
    ("models:/houses/3", ("houses", "3", None)),
    ("models:/houses", ("houses", None, None)),
    ("models:/houses/latest", ("houses", None, None)),
])
def test_parse_uri(uri, expected):
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(("uri", "message"), [
    ("models:/houses/Production", "MLflow stages are replaced by aliases"),
    ("models:/houses@bad alias", "alias 'bad alias' must be letters"),
    ("models:/", "names no valid model"),
    ("models:/@champion", "names no valid model"),
])
def test_malformed_uris_are_config_errors(uri, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        open_source(uri, home=tmp_path)


def test_register_then_fetch_gives_back_the_bundle_byte_for_byte(registry_home, demo_bundle):
    done = register_bundle(demo_bundle, "demo", alias="champion", home=registry_home)
    assert done == ResolvedVersion(uri="models:/demo/1", name="demo", version="1", alias="champion")

    source = open_source("models:/demo@champion", home=registry_home)
    assert isinstance(source, MlflowSource)
    resolved = source.resolve()
    assert resolved == ResolvedVersion(uri="models:/demo@champion", name="demo", version="1", alias="champion")
    folder = source.fetch(resolved)
    assert folder == registry_home / "cache" / "mlflow" / "demo" / "1"
    assert files(folder) == files(demo_bundle)  # exactly the bundle's files, nothing of MLflow's
    assert read_bundle(folder).manifest.model.sha256 == read_bundle(demo_bundle).manifest.model.sha256
    assert [p.name for p in folder.parent.iterdir()] == ["1"]  # no staging folder left behind


def test_the_cache_is_reused_and_a_damaged_copy_is_downloaded_again(registry_home, demo_bundle):
    register_bundle(demo_bundle, "demo", home=registry_home)
    source = open_source("models:/demo/1", home=registry_home)
    folder = source.fetch(source.resolve())
    artifacts = registry_home / "mlflow" / "artifacts"
    backup = registry_home / "artifacts-backup"
    shutil.move(artifacts, backup)  # the registry's copy is gone: only the cache can answer
    assert source.fetch(source.resolve()) == folder
    assert files(folder) == files(demo_bundle)

    (folder / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="cannot be downloaded"):  # the cache is not trusted blindly
        source.fetch(source.resolve())
    shutil.move(backup, artifacts)
    assert source.fetch(source.resolve()) == folder
    assert files(folder) == files(demo_bundle)


def test_resolve_sees_alias_moves_latest_and_pinned_versions(registry_home, demo_bundle, iris_bundle):
    register_bundle(demo_bundle, "m", alias="champion", home=registry_home)
    register_bundle(iris_bundle, "m", home=registry_home)
    champion = open_source("models:/m@champion", home=registry_home)
    assert champion.resolve().version == "1"
    assert open_source("models:/m", home=registry_home).resolve().version == "2"
    assert open_source("models:/m/1", home=registry_home).resolve().version == "1"

    client(tracking_uri(registry_home)).set_registered_model_alias("m", "champion", "2")
    moved = champion.resolve()  # the same source object, as a polling server keeps it
    assert moved.version == "2"
    assert read_bundle(champion.fetch(moved)).manifest.task == "classification"  # the iris model


def test_unknown_model_alias_and_version_are_model_not_found(registry_home, demo_bundle):
    register_bundle(demo_bundle, "demo", alias="champion", home=registry_home)
    with pytest.raises(ModelNotFound, match="there is no model 'nope' in the MLflow registry at sqlite:///"):
        open_source("models:/nope@champion", home=registry_home).resolve()
    with pytest.raises(ModelNotFound, match=r"model 'demo' has no alias 'staging' .*its aliases: champion -> 1.*"
                                            r"tabserve registry alias demo staging VERSION"):
        open_source("models:/demo@staging", home=registry_home).resolve()
    with pytest.raises(ModelNotFound, match="model 'demo' has no version 7"):
        open_source("models:/demo/7", home=registry_home).resolve()
    with pytest.raises(ModelNotFound, match="there is no model 'nope'"):
        open_source("models:/nope", home=registry_home).resolve()


def test_a_model_without_versions_says_how_to_register_one(registry_home):
    client(tracking_uri(registry_home)).create_registered_model("empty")
    with pytest.raises(ModelNotFound, match=r"model 'empty' has no versions .*--register empty"):
        open_source("models:/empty", home=registry_home).resolve()


def test_missing_or_tampered_artifacts_are_bundle_errors(registry_home, demo_bundle):
    register_bundle(demo_bundle, "demo", home=registry_home)
    source = open_source("models:/demo/1", home=registry_home)
    resolved = source.resolve()
    stored = next((registry_home / "mlflow" / "artifacts").rglob("model.onnx"))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="model 'demo' version 1 is not a valid tabserve bundle: .*sha256"):
        source.fetch(resolved)
    shutil.rmtree(stored.parent)
    with pytest.raises(BundleError, match="model 'demo' version 1: its bundle cannot be downloaded from"):
        source.fetch(resolved)
    assert not (registry_home / "cache" / "mlflow" / "demo" / "1").exists()
    assert list((registry_home / "cache" / "mlflow" / "demo").iterdir()) == []  # staging cleaned up


def test_an_unreachable_tracking_server_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ConfigError, match=r"the MLflow registry at http://127\.0\.0\.1:\d+ cannot be used: .*"
                                          r"MLFLOW_TRACKING_URI"):
        open_source("models:/demo@champion", home=tmp_path).resolve()
