"""Publishing a bundle to MLflow: what the run records (parameters, metrics, parity, signature, artifacts) and
what the registered version carries (tags, alias)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tabserve.core.bundle import read_bundle
from tabserve.errors import BundleError
from tabserve.registry.mlflow import client, tracking_uri
from tabserve.training.publish import register_bundle
from tests.registry.stores import fresh_home

pytest.importorskip("mlflow")


@pytest.fixture
def registry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_home(tmp_path, monkeypatch, tmp_path_factory)


def test_the_run_records_the_training_recipe_metrics_parity_and_the_bundle(registry_home, demo_bundle):
    manifest = read_bundle(demo_bundle).manifest
    done = register_bundle(demo_bundle, "houses", alias="champion", home=registry_home)
    mlflow = client(tracking_uri(registry_home))
    version = mlflow.get_model_version("houses", done.version)
    run = mlflow.get_run(version.run_id)

    params = run.data.params
    assert params["task"] == "regression" and params["estimator"] == "random_forest"
    assert params["seed"] == str(manifest.training["seed"]) and params["test_size"] == "0.2"
    assert params["features"] == ",".join(manifest.feature_names)
    assert params["params.n_estimators"] == str(manifest.training["params"]["n_estimators"])
    metrics = run.data.metrics
    assert metrics["r2"] == pytest.approx(manifest.metrics["r2"])
    assert metrics["rmse"] == pytest.approx(manifest.metrics["rmse"])
    assert metrics["parity.max_abs_diff"] == manifest.parity.max_abs_diff
    assert metrics["parity.rows_checked"] == manifest.parity.rows_checked
    assert run.data.tags["parity.passed"] == "true"
    assert run.data.tags["tabserve.sha256"] == manifest.model.sha256
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == mlflow.get_experiment_by_name("houses").experiment_id

    assert version.tags["tabserve.sha256"] == manifest.model.sha256
    assert version.tags["tabserve.manifest_version"] == manifest.version
    assert {a: str(v) for a, v in mlflow.get_registered_model("houses").aliases.items()} == {"champion": "1"}
    assert "regression (random_forest)" in version.description

    # the artifacts: an MLflow model folder (MLmodel with the signature) around the untouched bundle, stored
    # under HOME/mlflow/artifacts rather than the current folder
    model_dir = Path(version.source)
    assert model_dir.is_relative_to(registry_home.resolve() / "mlflow" / "artifacts")
    stored = {p.name: p.read_bytes() for p in (model_dir / "bundle").iterdir()}
    assert stored == {p.name: p.read_bytes() for p in demo_bundle.iterdir()}  # every bundle file, unchanged
    assert {"model.onnx", "tabserve.json"} <= set(stored)
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["flavors"]["tabserve"]["bundle"] == "bundle"
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [(n, "double") for n in manifest.feature_names]
    outputs = json.loads(mlmodel["signature"]["outputs"])
    assert outputs[0]["name"] == manifest.outputs[0].name
    assert outputs[0]["tensor-spec"]["dtype"] == manifest.outputs[0].dtype


def test_a_classifier_signature_names_its_label_and_probabilities(registry_home, iris_bundle):
    done = register_bundle(iris_bundle, "iris", home=registry_home)
    mlflow = client(tracking_uri(registry_home))
    version = mlflow.get_model_version("iris", done.version)
    mlmodel = yaml.safe_load((Path(version.source) / "MLmodel").read_text())
    outputs = {o["name"]: o["tensor-spec"] for o in json.loads(mlmodel["signature"]["outputs"])}
    manifest = read_bundle(iris_bundle).manifest
    label, proba = manifest.output("label"), manifest.output("probabilities")
    assert outputs[label.name]["dtype"] == "object"  # species names
    assert outputs[proba.name] == {"dtype": "float64", "shape": [-1, 3]}
    assert mlflow.get_run(version.run_id).data.params["classes"] == "setosa,versicolor,virginica"
    assert done.alias is None and dict(mlflow.get_registered_model("iris").aliases) == {}


def test_each_registration_is_a_new_version(registry_home, demo_bundle):
    versions = [register_bundle(demo_bundle, "twice", home=registry_home).version for _ in range(2)]
    assert versions == ["1", "2"]


def test_an_invalid_bundle_is_refused_before_anything_is_logged(registry_home, demo_bundle, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in demo_bundle.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.onnx").write_bytes(b"not the exported model")
    with pytest.raises(BundleError, match="sha256"):
        register_bundle(broken, "broken", home=registry_home)
    mlflow = client(tracking_uri(registry_home))
    assert mlflow.search_registered_models() == []
    assert mlflow.get_experiment_by_name("broken") is None
