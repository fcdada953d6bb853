"""What a bundle or a request must never make the server do: read outside the bundle, reach outside the model
store, unpickle, or answer with invalid JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tabserve
from tabserve.core.bundle import sha256
from tabserve.core.external_data import external_tensors
from tabserve.errors import BundleError

SRC = Path(tabserve.__file__).parent
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
WEIGHTS = np.arange(1, 6, dtype=np.float32).reshape(5, 1)


def _linear_model(constant_node: bool = False) -> onnx.ModelProto:
    """prediction = X @ W, W an initializer (or a Constant node's tensor attribute)."""
    w = numpy_helper.from_array(WEIGHTS, "W")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["variable"])]
    initializers = [w]
    if constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["W"], value=w))
        initializers = []
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 5])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _write(dest: Path, model: onnx.ModelProto, *, name: str = "linear", dtype: str = "float32",
           features: int = 5) -> Path:
    manifest = {
        "name": name, "version": "1", "task": "regression",
        "input": {"name": "X", "dtype": dtype, "shape": [None, features]},
        "features": [{"name": f"feature_{i}", "dtype": dtype} for i in range(features)],
        "outputs": [{"name": "variable" if name == "linear" else "prediction", "dtype": dtype,
                     "shape": [None, 1], "role": "prediction"}],
        "lineage": {"created_at": "2026-01-01T00:00:00Z"},
    }
    return tabserve.write_bundle(dest, model.SerializeToString(), manifest)


def _with_external_data(bundle: Path, location: str, *, constant_node: bool = False) -> Path:
    """Re-save the bundle's model with its weights as external data (as onnx.save_model does), point the
    location at ``location``, and fix the manifest's hash so that only the external data check stands."""
    model = _linear_model(constant_node)
    staging = bundle.parent / f"{bundle.name}-staging"
    staging.mkdir()
    onnx.save_model(model, staging / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0, convert_attribute=True)
    saved = onnx.load(staging / "model.onnx", load_external_data=False)
    tensors = [t for t in saved.graph.initializer] + [a.t for n in saved.graph.node for a in n.attribute
                                                       if a.HasField("t")]
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    data = saved.SerializeToString()
    (bundle / "model.onnx").write_bytes(data)
    manifest = json.loads((bundle / "tabserve.json").read_text())
    manifest["model"]["sha256"], manifest["model"]["size_bytes"] = sha256(data), len(data)
    (bundle / "tabserve.json").write_text(json.dumps(manifest))
    return staging / "w.bin"  # the weights, as the runtime would read them


@pytest.fixture
def linear_bundle(tmp_path: Path) -> Path:
    return _write(tmp_path / "store" / "linear" / "1", _linear_model())


def test_the_hand_built_bundle_serves(linear_bundle):
    assert tabserve.load(linear_bundle).predict([ROW])[0] == pytest.approx(float(np.dot(ROW, WEIGHTS[:, 0])))


def test_external_data_outside_the_bundle_is_refused(linear_bundle):
    weights = _with_external_data(linear_bundle, "../secret")
    (linear_bundle.parent / "secret").write_bytes(weights.read_bytes())  # readable: the refusal is ours
    with pytest.raises(BundleError) as info:
        tabserve.load(linear_bundle)
    assert "keeps tensor 'W' in external data at '../secret', outside the bundle" in str(info.value)


def test_external_data_at_an_absolute_path_is_refused(linear_bundle, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(_with_external_data(linear_bundle, str(secret)).read_bytes())
    with pytest.raises(BundleError, match="outside the bundle"):
        tabserve.load(linear_bundle)


def test_external_data_through_a_symlink_is_refused(linear_bundle, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(_with_external_data(linear_bundle, "w.bin").read_bytes())
    (linear_bundle / "w.bin").symlink_to(secret)
    with pytest.raises(BundleError, match="outside the bundle"):
        tabserve.load(linear_bundle)


def test_external_data_inside_the_bundle_is_refused_too(linear_bundle):
    """The manifest's sha256 covers model.onnx only: a weights file beside it could change unnoticed."""
    weights = _with_external_data(linear_bundle, "w.bin")
    (linear_bundle / "w.bin").write_bytes(weights.read_bytes())
    with pytest.raises(BundleError) as info:
        tabserve.load(linear_bundle)
    assert "in the external file 'w.bin'" in str(info.value)
    assert "without save_as_external_data" in str(info.value)


def test_external_data_in_a_node_attribute_is_found(tmp_path):
    bundle = _write(tmp_path / "b", _linear_model(constant_node=True))
    _with_external_data(bundle, "../../etc/passwd", constant_node=True)
    assert external_tensors((bundle / "model.onnx").read_bytes()) == [("W", "../../etc/passwd")]
    with pytest.raises(BundleError, match="outside the bundle"):
        tabserve.load(bundle)


def test_a_server_given_such_a_bundle_is_not_ready_and_says_why(make_client, linear_bundle):
    _with_external_data(linear_bundle, "../secret")
    with make_client(model_path=linear_bundle) as c:
        for _ in range(100):
            ready = c.get("/readyz")
            if ready.json()["status"] != "loading":
                break
        assert ready.status_code == 503 and "outside the bundle" in ready.json()["error"]
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 503


def test_a_model_file_that_is_a_symlink_out_of_the_bundle_is_refused(linear_bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((linear_bundle / "model.onnx").read_bytes())
    (linear_bundle / "model.onnx").unlink()
    (linear_bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="points outside the bundle"):
        tabserve.load(linear_bundle)


def test_a_truncated_model_file_is_a_bundle_error():
    data = _linear_model().SerializeToString() + b"location"
    with pytest.raises(BundleError, match="not a valid ONNX file"):
        external_tensors(data[:40] + b"location")


# -- names and versions in URLs ------------------------------------------------------------------------------

# Encoded: a plain ".." is resolved by the client before it is sent.
TRAVERSALS = ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "demo%2F..%2F..%2Fsecret", "%2E%2E", "demo%00"]


@pytest.fixture
def admin_client(make_client, demo_model):
    with make_client(demo_model, admin_routes="on") as c:
        yield c


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_names_in_urls_never_reach_the_file_system(admin_client, name):
    client = admin_client
    v2 = {"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": ROW}]}
    for method, path, body in [
        ("POST", f"/v2/models/{name}/infer", v2),
        ("POST", f"/v2/models/demo/versions/{name}/infer", v2),
        ("GET", f"/v2/models/{name}", None),
        ("GET", f"/v2/models/{name}/ready", None),
        ("GET", f"/v2/models/demo/versions/{name}", None),
        ("GET", f"/api/v1/models/{name}", None),
        ("POST", f"/v2/repository/models/{name}/load", {}),
        ("POST", f"/v2/repository/models/{name}/unload", {}),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code in (404, 405), (path, r.status_code, r.text)
    assert client.get("/readyz").json()["model"] == "demo"  # still serving, nothing else loaded
    assert client.app.state.manager.source == str(client.app.state.manager.model.bundle.path)


def test_loading_by_name_reloads_only_the_configured_bundle(admin_client):
    client = admin_client
    manager = client.app.state.manager
    source = manager.source
    r = client.post("/v2/repository/models/demo/load", json={"parameters": {"file:../../etc/passwd": "x"}})
    assert r.status_code == 400 and "not supported" in r.json()["error"]
    assert client.post("/v2/repository/models/demo/load").status_code == 200
    assert manager.source == source


# -- nothing is unpickled ------------------------------------------------------------------------------------

SERVING_PACKAGES = ["api", "core", "serving", "protocol", "observability", "registry"]
UNPICKLERS = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|joblib|cloudpickle|dill|skops|shelve)\b|"
                        r"allow_pickle\s*=\s*True|torch\.load\(", re.MULTILINE)


def test_serving_code_has_no_unpickler():
    offenders = []
    for package in SERVING_PACKAGES:
        for path in (SRC / package).rglob("*.py") if (SRC / package).is_dir() else []:
            if UNPICKLERS.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_serving_a_bundle_unpickles_nothing(demo_bundle):
    """A fresh interpreter loads a bundle and answers v1 and v2 requests under an audit hook that records any
    unpickling (``pickle.find_class``) and any import of a pickle-based model loader."""
    script = textwrap.dedent(f"""
        import sys
        events = []
        sys.addaudithook(lambda event, args: events.append(event) if event == "pickle.find_class" else None)
        from fastapi.testclient import TestClient
        import tabserve
        app = tabserve.create_app(tabserve.Settings(model_path={str(demo_bundle)!r}, access_log=False,
                                                   admin_routes="on"))
        with TestClient(app) as c:
            while c.get("/readyz").status_code != 200:
                pass
            assert c.post("/api/v1/predict", json={{"data": {ROW}}}).status_code == 200
            assert c.post("/api/v1/predict/batch", json={{"data": [{ROW}] * 3}}).status_code == 200
            body = {{"inputs": [{{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": {ROW}}}]}}
            assert c.post("/v2/models/demo/infer", json=body).status_code == 200
            assert c.post("/v2/repository/models/demo/load").status_code == 200
        loaders = sorted(m for m in ("joblib", "cloudpickle", "dill", "skops", "sklearn") if m in sys.modules)
        print("RESULT", len(events), loaders)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TABSERVE_HOME": str(demo_bundle.parent)}, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESULT 0 []" in out.stdout


# -- non-finite model outputs ----------------------------------------------------------------------------------

def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def divide_by_zero_model(tmp_path_factory) -> tabserve.Model:
    """prediction = x / 0: +inf, -inf or NaN."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["X", "zero"], ["prediction"])], "div0",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("prediction", TensorProto.DOUBLE, [None, 1])],
        initializer=[helper.make_tensor("zero", TensorProto.DOUBLE, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bundle = _write(tmp_path_factory.mktemp("div0") / "div0", model, name="div0", dtype="float64", features=1)
    return tabserve.load(bundle)


def test_non_finite_outputs_still_give_valid_json(make_client, divide_by_zero_model):
    with make_client(divide_by_zero_model, range_policy="off") as c:
        for x in (1.0, -1.0, 0.0):
            r = c.post("/api/v1/predict", json={"data": [x]})
            assert r.status_code == 200 and _strict_json(r.text)["prediction"] is None
        r = c.post("/api/v1/predict/batch", json={"data": [[1.0], [-1.0], [0.0], [2.0]]})
        assert r.status_code == 200 and _strict_json(r.text)["predictions"] == [None] * 4
        body = {"inputs": [{"name": "X", "shape": [3, 1], "datatype": "FP64", "data": [1.0, -1.0, 0.0]}]}
        r = c.post("/v2/models/div0/infer", json=body)
        assert r.status_code == 200 and _strict_json(r.text)["outputs"][0]["data"] == [None] * 3
