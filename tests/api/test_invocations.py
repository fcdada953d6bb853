"""MLflow's scoring protocol: the requests ``mlflow models serve`` answers get the same answers from tabserve's
``/invocations``; SageMaker's header-less CSV and ``/ping``; refusals that name the problem; the plane's limits,
keys, rate limit and payload hook apply."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import tabserve
from tabserve.api.auth import hash_key
from tabserve.observability.payload import PayloadRecord
from tests.registry.test_pyfunc import registry, rows, scoring_server_available  # noqa: F401 - fixture
from tests.servers import free_port

CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def iris_client(iris_bundle: Path) -> Iterator[TestClient]:
    app = tabserve.create_app(tabserve.Settings(access_log=False, max_batch_rows=50),
                              model=tabserve.load(iris_bundle))
    with TestClient(app) as c:
        yield c


def requests_like_mlflow_clients(iris_bundle: Path) -> list[tuple[str, dict[str, Any]]]:
    """What MLflow's docs and clients send (pandas' to_dict / to_csv, TF-serving style), columns shuffled."""
    df = rows(iris_bundle, 6)
    split = df.to_dict(orient="split")
    del split["index"]
    records = df.to_dict(orient="records")
    columns = df.to_dict(orient="list")
    proba = {"output": "probabilities"}
    return [
        ("split", {"json": {"dataframe_split": split}}),
        ("split with index", {"json": {"dataframe_split": df.to_dict(orient="split")}}),
        ("records", {"json": {"dataframe_records": records}}),
        ("instances", {"json": {"instances": records}}),
        ("inputs", {"json": {"inputs": columns}}),
        ("split, probabilities", {"json": {"dataframe_split": split, "params": proba}}),
        ("records, probabilities", {"json": {"dataframe_records": records, "params": proba}}),
        ("csv", {"content": df.to_csv(index=False), "headers": CSV}),
        ("json with charset", {"content": json.dumps({"dataframe_split": split}),
                               "headers": {"content-type": "application/json; charset=utf-8"}}),
    ]


@contextlib.contextmanager
def mlflow_models_serve(tracking: str, uri: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # watchdog only
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"mlflow models serve exited with {proc.returncode}:\n{log.read()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "mlflow models serve not ready in time"
            time.sleep(0.3)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.skipif(not scoring_server_available(), reason="mlflow models serve needs uvicorn and fastapi")
def test_every_request_mlflow_models_serve_answers_gets_the_same_answer(registry, iris_bundle,  # noqa: F811
                                                                        iris_client):
    from tabserve.registry.mlflow import tracking_uri

    cases = requests_like_mlflow_clients(iris_bundle)
    with mlflow_models_serve(tracking_uri(registry), "models:/iris@champion") as base:
        for what, request in cases:
            theirs = httpx.post(f"{base}/invocations", timeout=30, **request)
            ours = iris_client.post("/invocations", **request)
            assert theirs.status_code == 200, (what, theirs.text)
            assert ours.status_code == 200, (what, ours.text)
            assert ours.json() == theirs.json(), what
        assert iris_client.get("/ping").status_code == httpx.get(f"{base}/ping").status_code == 200


def test_answers_are_the_models_predictions(iris_client, iris_bundle):
    model = tabserve.load(iris_bundle)
    df = rows(iris_bundle, 6)
    for what, request in requests_like_mlflow_clients(iris_bundle):
        r = iris_client.post("/invocations", **request)
        assert r.status_code == 200, (what, r.text)
        got = r.json()["predictions"]
        if "probabilities" in what:
            np.testing.assert_array_equal([[p[c] for c in model.classes] for p in got],
                                          model.predict_proba(df))
        else:
            assert got == list(model.predict(df)), what


def test_sagemaker_csv_without_a_header_is_rows_in_feature_order(iris_client, iris_model):
    df = rows_in_order(iris_model, 5)
    r = iris_client.post("/invocations", content=df.to_csv(index=False, header=False), headers=CSV)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": list(iris_model.predict(df))}
    # dataframe_split without columns and instances as lists: feature order too
    values = df.to_numpy().tolist()
    for body in ({"dataframe_split": {"data": values}}, {"instances": values}, {"inputs": values}):
        assert iris_client.post("/invocations", json=body).json() == r.json(), body


def rows_in_order(model: tabserve.Model, n: int) -> Any:
    import pandas as pd

    stats = [f.stats for f in model.manifest.features]
    rng = np.random.default_rng(3)
    return pd.DataFrame({f.name: rng.uniform(s.min, s.max, n) for f, s in zip(model.manifest.features, stats,
                                                                               strict=True)})


@pytest.mark.parametrize(("request_kwargs", "status", "words"), [
    ({"json": {"dataframe_records": [{"sepal_length": 5.0}]}}, 400, "missing feature(s) 'sepal_width'"),
    ({"json": {"dataframe_split": {"columns": ["a"], "data": [[1]]}, "instances": [[1, 2, 3, 4]]}}, 400,
     "exactly one of dataframe_split"),
    ({"json": {"dataframe_split": {"data": [[1, 2, 3]]}}}, 400, "expects 4 features"),
    ({"json": {"instances": [[1, 2, "x", 4]]}}, 400, "petal_length"),
    ({"json": {"instances": [[1, 2, 3, 4]], "params": {"output": "margins"}}}, 400, "'probabilities'"),
    ({"json": {"instances": [[1, 2, 3, 4]] * 51}}, 400, "limit is 50 rows"),
    ({"content": "1,2,3,4\n" * 51, "headers": CSV}, 400, "limit is 50 rows"),
    ({"content": "1,2,abc,4\n", "headers": CSV}, 400, "'abc' is not a number"),
    ({"content": "sepal_length,sepal_width,petal_width\n1,2,3\n", "headers": CSV}, 400,
     "the CSV header lacks feature(s) 'petal_length'"),
    ({"content": "not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": "1,2,3,4", "headers": {"content-type": "text/plain"}}, 415, "application/json or text/csv"),
    ({"content": "1,2,3,4", "headers": {"content-type": "text/csv; charset=latin-1"}}, 415, "charset=latin-1"),
])
def test_malformed_requests_are_refused_naming_the_problem(iris_client, request_kwargs, status, words):
    r = iris_client.post("/invocations", **request_kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["message"], body
    assert body["error_code"] == "BAD_REQUEST"


def test_a_regressor_has_no_probabilities_to_give(make_client, demo_model):
    with make_client(demo_model) as c:
        r = c.post("/invocations", json={"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]], "params": {"output":
                                                                                               "probabilities"}})
        assert r.status_code == 400 and "has no class probabilities" in r.json()["message"]
        r = c.post("/invocations", json={"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]]})
        assert r.json() == {"predictions": list(demo_model.predict(np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])))}


def test_ping_is_503_until_a_model_is_ready_and_needs_no_key(make_client, tmp_path, demo_model):
    with make_client(model_path=tmp_path / "nothing-here") as c:
        deadline = time.monotonic() + 5  # watchdog: the load fails at once
        while c.get("/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.get("/ping").status_code == 503
        r = c.post("/invocations", json={"instances": [[1, 2, 3, 4, 5]]})
        assert r.status_code == 503 and r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    keys = json.dumps([{"name": "app", "sha256": hash_key("tsk_k"), "scopes": ["predict"]}])
    with make_client(demo_model, api_keys=keys) as c:
        assert c.get("/ping").status_code == 200
        body = {"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]]}
        assert c.post("/invocations", json=body).status_code == 401
        assert c.post("/invocations", json=body, headers={"Authorization": "Bearer tsk_k"}).status_code == 200


def test_each_row_is_charged_to_the_rate_limit(make_client, demo_model):
    with make_client(demo_model, rate_limit="5/minute") as c:
        body = {"instances": [[0.1, 0.2, 0.3, 0.4, 0.5]] * 3}
        assert c.post("/invocations", json=body).status_code == 200
        r = c.post("/invocations", json=body)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text


class Recorder:
    def __init__(self) -> None:
        self.records: list[PayloadRecord] = []

    def offer(self, *fields: Any) -> None:
        self.records.append(PayloadRecord(*fields))


def test_answered_invocations_are_offered_to_the_payload_log(demo_model):
    sink = Recorder()
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model, payload=sink)
    with TestClient(app) as c:
        r = c.post("/invocations", content="0.1,0.2,0.3,0.4,0.5\n0.5,0.4,0.3,0.2,0.1\n", headers=CSV)
        assert r.status_code == 200 and r.headers["x-tabserve-model-version"] == demo_model.version
    (record,) = sink.records
    assert record.protocol == "invocations" and record.request_id == r.headers["x-request-id"]
    assert record.prediction.values.shape == (2,)
