"""MLflow itself loads what tabserve registers: ``mlflow.pyfunc.load_model``, ``mlflow.onnx.load_model`` and
``mlflow models serve`` answer exactly what ``tabserve.load(bundle).predict`` answers; the run shows the input
example, the training dataset and the training time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import tabserve
from tabserve.registry.mlflow import client, tracking_uri
from tabserve.training.publish import register_bundle
from tests.registry.stores import empty_store
from tests.servers import free_port

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bundles_dir: Path, demo_bundle: Path,
             iris_bundle: Path) -> Iterator[Path]:
    """One embedded registry for the module: iris@champion (string labels) and houses@champion (regression);
    MLFLOW_TRACKING_URI names it afterwards, as a user of plain MLflow would set it."""
    home = tmp_path_factory.mktemp("pyfunc-home")
    (home / "mlflow").mkdir()
    shutil.copy(empty_store(tmp_path_factory), home / "mlflow" / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("TABSERVE_HOME", str(home))
        csv = bundles_dir / "iris.csv"  # what iris_bundle was trained on
        register_bundle(iris_bundle, "iris", alias="champion", home=home, dataset=pd.read_csv(csv),
                        dataset_source=str(csv), training_seconds=1.25)
        register_bundle(demo_bundle, "houses", alias="champion", home=home)
        mp.setenv("MLFLOW_TRACKING_URI", tracking_uri(home))
        yield home


def rows(bundle: Path, n: int = 40) -> pd.DataFrame:
    """Rows spread over the training ranges (and categories), with the feature columns shuffled."""
    manifest = tabserve.read_bundle(bundle).manifest
    rng = np.random.default_rng(1)
    cols = {}
    for f in manifest.features:
        if f.kind == "categorical":
            cols[f.name] = rng.choice(f.categories, n)
        else:
            cols[f.name] = rng.uniform(f.stats.min, f.stats.max, n)
    names = list(cols)[::-1]
    return pd.DataFrame(cols)[names]


def test_pyfunc_predicts_a_classifiers_labels_exactly_as_tabserve(registry, iris_bundle):
    import mlflow.pyfunc

    df = rows(iris_bundle)
    model = mlflow.pyfunc.load_model("models:/iris@champion")
    got = model.predict(df)
    expected = tabserve.load(iris_bundle).predict(df)
    assert list(got) == list(expected) and set(got) <= {"setosa", "versicolor", "virginica"}

    proba = model.predict(df, params={"output": "probabilities"})
    assert list(proba.columns) == ["setosa", "versicolor", "virginica"]
    np.testing.assert_array_equal(proba.to_numpy(), tabserve.load(iris_bundle).predict_proba(df))
    # one row as a dict of values
    assert list(model.predict(df.iloc[0].to_dict())) == [expected[0]]


def test_pyfunc_predicts_a_regressors_values_exactly_as_tabserve(registry, demo_bundle):
    import mlflow.pyfunc

    df = rows(demo_bundle)
    got = np.asarray(mlflow.pyfunc.load_model("models:/houses/1").predict(df))
    np.testing.assert_array_equal(got, tabserve.load(demo_bundle).predict(df))


def test_onnx_flavor_gives_the_bundles_graph(registry, demo_bundle):
    import mlflow.onnx
    import onnxruntime as ort

    proto = mlflow.onnx.load_model("models:/houses@champion")
    assert proto.SerializeToString() == (demo_bundle / "model.onnx").read_bytes()
    model = tabserve.load(demo_bundle)
    x = model._as_array(rows(demo_bundle))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x})[0].reshape(-1)
    np.testing.assert_array_equal(out, model.predict(rows(demo_bundle)))


def test_the_run_records_input_example_dataset_and_training_time(registry):
    from mlflow.models import Model

    mlflow = client(tracking_uri(registry))
    version = mlflow.get_model_version("iris", "1")
    meta = Model.load(str(Path(version.source) / "MLmodel"))
    assert set(meta.flavors) == {"tabserve", "python_function", "onnx"}
    assert meta.flavors["python_function"]["loader_module"] == "tabserve.registry.pyfunc"
    example = meta.load_input_example(version.source)
    assert len(example) == 3 and list(example.columns) == tabserve.read_bundle(
        Path(version.source) / "bundle").manifest.feature_names

    run = mlflow.get_run(version.run_id)
    assert run.data.metrics["training_seconds"] == 1.25
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.name == "iris.csv"
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
    assert "species" in used.dataset.schema


def scoring_server_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("uvicorn", "fastapi"))


@pytest.mark.skipif(not scoring_server_available(), reason="mlflow models serve needs uvicorn and fastapi")
def test_mlflow_models_serve_answers_like_tabserve(registry, iris_bundle):
    port = free_port()
    # It runs `uvicorn` by name: the virtualenv's bin folder is on PATH, as in an activated environment.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(registry),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/iris@champion",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"],
                            env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # watchdog only: it is ready in a few seconds
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"mlflow models serve exited with {proc.returncode}:\n{log.read()[-4000:]}")
            try:
                if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve not ready in time"
            time.sleep(0.3)
        df = rows(iris_bundle, 10)
        split = df.to_dict(orient="split")
        del split["index"]
        answer = httpx.post(f"{base}/invocations", json={"dataframe_split": split}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == list(tabserve.load(iris_bundle).predict(df))
        proba = httpx.post(f"{base}/invocations", json={"dataframe_split": split,
                                                          "params": {"output": "probabilities"}}, timeout=30)
        assert proba.status_code == 200, proba.text
        got = pd.DataFrame(proba.json()["predictions"])[["setosa", "versicolor", "virginica"]].to_numpy()
        np.testing.assert_array_equal(got, tabserve.load(iris_bundle).predict_proba(df))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
