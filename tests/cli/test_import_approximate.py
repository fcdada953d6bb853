"""`tabserve import --approximate` (#16): a model only skl2onnx converts (a Gaussian process) is refused
without the flag, naming the step, an alternative and the flag; with it, the bundle records the error it
measured (manifest 'approximation', parity bounds), every response's model_format shows it, and the served
predictions are within it. A bundle whose recorded parity exceeds its bound is refused at load."""

from __future__ import annotations

import json
import shutil

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import tabserve
from tabserve.cli import main
from tabserve.errors import BundleError


def cli(*argv: object) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def gp(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("gp")
    frame = load_diabetes(as_frame=True).frame.head(120)
    frame.to_csv(folder / "sample.csv", index=False)
    X, y = frame.drop(columns="target"), frame["target"]
    model = Pipeline([("scale", StandardScaler()), ("gp", GaussianProcessRegressor())]).fit(X, y)
    joblib.dump(model, folder / "gp.joblib")
    return folder, model, X


def test_without_the_flag_the_refusal_names_the_step_an_alternative_and_the_flag(gp, capsys, tmp_path):
    folder, _, _ = gp
    assert cli("import", folder / "gp.joblib", "--sample", folder / "sample.csv", "--target", "target",
               "--trust-pickle", "--out", tmp_path / "b") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "step 2 'gp' (GaussianProcessRegressor) has no exact ONNX export" in err
    assert "replace it with a supported step" in err and "--approximate" in err
    assert not (tmp_path / "b").exists()


def test_with_the_flag_the_measured_error_is_recorded_and_shown(gp, capsys, tmp_path):
    folder, model, X = gp
    assert cli("import", folder / "gp.joblib", "--sample", folder / "sample.csv", "--target", "target",
               "--trust-pickle", "--approximate", "--out", tmp_path / "b") == 0
    assert "APPROXIMATE: skl2onnx" in capsys.readouterr().out

    manifest = tabserve.load(tmp_path / "b").manifest
    approx, parity = manifest.approximation, manifest.parity
    assert approx is not None and approx.exporter.startswith("skl2onnx")
    assert "GaussianProcessRegressor" in approx.reason and approx.rows == parity.rows_checked > len(X)
    assert (parity.atol, parity.rtol) == (approx.max_abs_error, approx.max_rel_error) and parity.passed
    assert 0 < approx.max_abs_error < 1e-3  # not exact, and close (double where skl2onnx converts in double)

    rows = X.to_numpy()
    expected = model.predict(X)
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(tmp_path / "b"))
    with TestClient(app) as client:
        single = client.post("/api/v1/predict", json={"data": rows[0].tolist()})
        batch = client.post("/api/v1/predict/batch", json={"data": rows.tolist()})
        v2 = client.post(f"/v2/models/{manifest.name}/infer", json={"inputs": [
            {"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]})
        health = client.get("/api/v1/predict/health")
    shown = f"onnx (approximate, max abs err {approx.max_abs_error:.2g}, max rel err {approx.max_rel_error:.2g})"
    assert single.json()["model_format"] == shown and batch.json()["model_format"] == shown
    assert v2.json()["parameters"]["model_format"] == shown and health.json()["model_format"] == shown
    got = np.array(batch.json()["predictions"])
    assert np.abs(got - expected).max() <= approx.max_abs_error
    assert np.all(np.abs(got - expected) <= approx.max_abs_error + approx.max_rel_error * np.abs(expected))


def test_an_exact_model_keeps_the_seed_model_format(tmp_path):
    from sklearn.linear_model import Ridge

    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(tmp_path / "sample.csv", index=False)
    joblib.dump(Ridge().fit(frame.drop(columns="target"), frame["target"]), tmp_path / "r.joblib")
    assert cli("import", tmp_path / "r.joblib", "--sample", tmp_path / "sample.csv", "--target", "target",
               "--trust-pickle", "--approximate", "--out", tmp_path / "b") == 0
    model = tabserve.load(tmp_path / "b")
    assert model.manifest.approximation is None  # --approximate only allows; an exact export stays exact
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=model)
    with TestClient(app) as client:
        assert client.post("/api/v1/predict", json={"data": [0.01] * 10}).json()["model_format"] == "onnx"


def test_a_bundle_whose_parity_exceeds_its_stated_bound_is_refused(gp, tmp_path):
    folder, _, _ = gp
    assert cli("import", folder / "gp.joblib", "--sample", folder / "sample.csv", "--target", "target",
               "--trust-pickle", "--approximate", "--out", tmp_path / "b") == 0
    shutil.copytree(tmp_path / "b", tmp_path / "edited")
    path = tmp_path / "edited" / "tabserve.json"
    raw = json.loads(path.read_text())
    raw["approximation"]["max_abs_error"] = raw["parity"]["max_abs_diff"] / 10  # a bound it does not meet
    path.write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="exceeds its stated bound"):
        tabserve.load(tmp_path / "edited")


def test_an_approximate_graph_that_changes_a_label_is_still_refused(tmp_path):
    """A distance-weighted brute k-NN has no exact export (BLAS's distances); skl2onnx's graph of it answers
    other labels at the training rows (distance 0), so --approximate refuses it too, showing the rows."""
    from sklearn.datasets import load_iris
    from sklearn.neighbors import KNeighborsClassifier

    from tabserve.errors import ExportError
    from tabserve.training import import_model

    frame = load_iris(as_frame=True).frame
    frame.to_csv(tmp_path / "iris.csv", index=False)
    X, y = frame.drop(columns="target"), frame["target"]
    model = Pipeline([("scale", StandardScaler()),
                      ("knn", KNeighborsClassifier(weights="distance", algorithm="brute"))]).fit(X, y)
    joblib.dump(model, tmp_path / "knn.joblib")
    with pytest.raises(ExportError, match=r"even --approximate cannot serve this model: skl2onnx .* gives another "
                                          r"label than the model on \d+ of \d+ parity rows"):
        import_model(tmp_path / "knn.joblib", tmp_path / "iris.csv", target="target", trust_pickle=True,
                     approximate=True, dest=tmp_path / "b")
    assert not (tmp_path / "b").exists()
