from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tabserve
from tabserve.core.bundle import next_version, read_bundle, resolve_bundle_dir, write_bundle
from tabserve.core.manifest import MANIFEST_FILE, MODEL_FILE


@pytest.fixture
def bundle_copy(demo_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "demo" / "1"
    shutil.copytree(demo_bundle, dest)
    return dest


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def manifest_fields(bundle: Path) -> dict:
    data = json.loads((bundle / MANIFEST_FILE).read_text())
    del data["model"]
    return data


def test_round_trip_preserves_manifest_and_predictions(demo_bundle, tmp_path):
    original = tabserve.load(demo_bundle)
    tensor = manifest_fields(demo_bundle)["tensor_model"]  # the GPU graph, beside model.onnx
    copy = write_bundle(tmp_path / "again", (demo_bundle / MODEL_FILE).read_bytes(), manifest_fields(demo_bundle),
                        explain=(demo_bundle / "explain.npz").read_bytes(),
                        tensor=((demo_bundle / tensor["file"]).read_bytes(), tensor))
    again = tabserve.load(copy)
    assert again.manifest == original.manifest
    x = np.random.default_rng(0).normal(size=(20, 5))
    np.testing.assert_array_equal(again.predict(x), original.predict(x))


def test_tampered_model_file_is_refused(bundle_copy):
    data = bytearray((bundle_copy / MODEL_FILE).read_bytes())
    data[-10] ^= 0xFF
    (bundle_copy / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(tabserve.BundleError, match="sha256 .* was changed after export"):
        tabserve.load(bundle_copy)


def test_manifest_feature_count_must_match_the_onnx_input(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m["features"].pop())
    with pytest.raises(tabserve.BundleError, match=r"shape \[None, 5\] but tabserve.json lists 4 features"):
        tabserve.load(bundle_copy)


def test_manifest_input_and_output_names_must_match_the_graph(bundle_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bundle_copy, other)
    edit_manifest(bundle_copy, lambda m: m["input"].update(name="features"))
    with pytest.raises(tabserve.BundleError,
                       match=r"model.onnx has inputs \['X'\] but tabserve.json describes \['features'\]"):
        tabserve.load(bundle_copy)
    edit_manifest(other, lambda m: m["outputs"][0].update(name="score"))
    with pytest.raises(tabserve.BundleError, match="names output 'score' but model.onnx has only"):
        tabserve.load(other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("task"), "task: Field required"),
        (lambda m: m.update(task="ranking"), "task: Input should be 'regression', 'classification' or 'anomaly'"),
        (lambda m: m["features"].__setitem__(1, m["features"][0]), "lists feature(s) 'feature_0' more than once"),
        (lambda m: m["model"].update(file="../../etc/passwd"), "points outside the bundle"),
    ],
)
def test_inconsistent_manifests_are_refused_with_the_reason(bundle_copy, change, message):
    edit_manifest(bundle_copy, change)
    with pytest.raises(tabserve.BundleError) as info:
        tabserve.load(bundle_copy)
    assert message in str(info.value)


def test_unreadable_bundles_name_the_file(bundle_copy, tmp_path):
    (bundle_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(tabserve.BundleError, match="tabserve.json cannot be read as JSON"):
        tabserve.load(bundle_copy)
    with pytest.raises(tabserve.BundleError, match="does not exist"):
        tabserve.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tabserve.BundleError, match="expected tabserve.json and model.onnx"):
        tabserve.load(tmp_path / "empty")


def test_a_model_folder_resolves_to_its_newest_version(bundle_copy):
    model_dir = bundle_copy.parent
    shutil.copytree(bundle_copy, model_dir / "10")
    shutil.copytree(bundle_copy, model_dir / "2")
    assert resolve_bundle_dir(model_dir) == model_dir / "10"
    assert next_version(model_dir) == "11"
    assert next_version(model_dir / "new") == "1"


def test_failed_write_leaves_nothing_behind(demo_bundle, tmp_path):
    fields = manifest_fields(demo_bundle)
    fields["features"] = fields["features"][:3]  # inconsistent with the graph: caught before publishing
    with pytest.raises(tabserve.BundleError):
        write_bundle(tmp_path / "out", (demo_bundle / MODEL_FILE).read_bytes(), fields)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_to_replace_unless_asked(demo_bundle, tmp_path):
    data, fields = (demo_bundle / MODEL_FILE).read_bytes(), manifest_fields(demo_bundle)
    dest = write_bundle(tmp_path / "b", data, fields)
    with pytest.raises(tabserve.BundleError, match="already exists"):
        write_bundle(dest, data, fields)
    write_bundle(dest, data, {**fields, "version": "7"}, overwrite=True)
    assert read_bundle(dest).manifest.version == "7"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_hidden_staging_folders_are_never_served(bundle_copy):
    model_dir = bundle_copy.parent
    shutil.copytree(bundle_copy, model_dir / ".2.tmp-deadbeef")
    shutil.copytree(bundle_copy, model_dir / ".3.old-deadbeef")
    assert resolve_bundle_dir(model_dir) == bundle_copy
