"""The loop through a real server: predictions logged, feedback over HTTP (from any worker), quality read back
from the files, also after a restart; and the whole loop with a real MLflow registry: serve, predict, feedback,
retrain from the log, promotion, the server swaps."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sklearn import metrics as skm
from sklearn.datasets import load_diabetes, load_iris

from tabserve.api.app import create_app
from tabserve.settings import Settings
from tests.servers import running_server

pytestmark = pytest.mark.slow


def wait_for(check, within_s: float = 60.0):
    """Poll ``check()`` until it returns something truthy (a watchdog, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def ready(client: TestClient) -> None:
    assert wait_for(lambda: client.get("/readyz").status_code == 200)


def test_predict_feedback_quality_and_again_after_a_restart(tmp_path: Path, iris_bundle: Path,
                                                             iris_model) -> None:
    settings = Settings(model_path=iris_bundle, home=tmp_path / "home", payload_log_dir=tmp_path / "payload",
                        payload_rotate_s=0.2, quality_interval_s=0.2)
    X, _ = load_iris(return_X_y=True)
    name = iris_model.name
    with TestClient(create_app(settings)) as client:
        ready(client)
        ids = []
        for start in range(0, 150, 10):
            r = client.post("/api/v1/predict/batch", json={"data": X[start:start + 10].tolist()})
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
        single = client.post("/api/v1/predict", json={"data": X[0].tolist()}, headers={"X-Request-ID": "mine-1"})
        assert single.status_code == 200
        predicted = np.array(iris_model.predict(X)).astype(str)
        truth = predicted.copy()
        truth[::4] = "versicolor"
        items = [{"request_id": ids[i // 10], "row": i % 10, "label": str(truth[i])} for i in range(150)]
        r = client.post("/api/v1/feedback", json={"feedback": items + [{"request_id": "nobody", "label": "setosa"}]})
        assert r.status_code == 200
        assert r.json() == {"model": name, "accepted": 151, "unknown": ["nobody"], "unknown_count": 1}
        assert client.post("/api/v1/feedback", json={"request_id": "mine-1", "label": "setosa"}).json()["unknown"] == []
        bad = client.post("/api/v1/feedback", json={"request_id": "x", "label": "tulip"})
        assert bad.status_code == 422 and "'tulip' is not a class" in bad.json()["detail"]
        assert client.post("/api/v1/feedback", content=b"{oops").status_code == 422

        def labelled() -> dict | None:
            report = client.get(f"/api/v1/models/{name}/quality").json()
            return report if report["labelled"] == 151 else None

        report = wait_for(labelled)
        assert report is not None
        [group] = report["versions"]
        t = np.r_[truth, ["setosa"]]
        p = np.r_[predicted, [predicted[0]]]
        assert group["metrics"]["accuracy"] == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
        assert group["metrics"]["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro"), abs=1e-12)
        assert report["unmatched_feedback"] == 1
        metrics = wait_for(lambda: 'metric="accuracy"' in (m := client.get("/metrics").text) and m)
        assert f'tabserve_model_quality{{metric="accuracy",model="{name}"' in metrics
        assert client.get("/api/v1/models/nothing/quality").status_code == 404
        assert client.get(f"/api/v1/models/{name}/quality?since=soon").status_code == 422
    files = sorted((tmp_path / "payload" / name).glob("date=*/part-*.parquet"))
    assert pq.ParquetDataset(files).read().num_rows == 151  # shutdown published everything
    with TestClient(create_app(settings)) as client:  # a restart: the same answer, from the files
        ready(client)
        again = client.get(f"/api/v1/models/{name}/quality").json()
        assert again["versions"] == report["versions"] and again["labelled"] == 151


def test_feedback_without_a_payload_log_says_how_to_turn_it_on(tmp_path: Path, demo_bundle: Path) -> None:
    with TestClient(create_app(Settings(model_path=demo_bundle, home=tmp_path))) as client:
        ready(client)
        r = client.post("/api/v1/feedback", json={"request_id": "a", "label": 1.0})
        assert r.status_code == 422 and "--payload-log DIR" in r.json()["detail"]


def test_feedback_to_another_replica_joins_the_first_ones_log(tmp_path: Path, demo_bundle: Path,
                                                              demo_model) -> None:
    """Two server processes sharing the log folder (two replicas, or two workers): predictions on one, labels
    and quality on the other."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    log_dir = tmp_path / "payload"
    flags = ("--payload-log", str(log_dir), "--payload-rotate-s", "0.5")
    with running_server(str(demo_bundle), *flags, "--home", str(tmp_path / "a")) as first, \
            running_server(str(demo_bundle), *flags, "--home", str(tmp_path / "b")) as second, \
            httpx.Client(timeout=30) as client:
        ids = []
        for row in X:
            r = client.post(f"{first}/api/v1/predict", json={"data": row.tolist()})
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
        labels = demo_model.predict(X) + 1.0  # every prediction off by exactly 1
        feedback = {"feedback": [{"request_id": rid, "label": float(y)} for rid, y in zip(ids, labels, strict=True)]}
        r = client.post(f"{second}/api/v1/feedback", json=feedback)
        assert r.status_code == 200 and r.json()["accepted"] == 60  # kept, even while the ids are unknown here

        def quality() -> dict | None:
            q = client.get(f"{second}/api/v1/models/{demo_model.name}/quality").json()
            return q if q["labelled"] == 60 else None

        report = wait_for(quality)  # the first replica publishes within its 0.5 s rotation
        assert report is not None and report["unmatched_feedback"] == 0
        assert report["versions"][0]["metrics"]["mae"] == pytest.approx(1.0, abs=1e-9)
        assert client.post(f"{second}/api/v1/feedback", json=feedback).json()["unknown_count"] == 0
    table = pq.ParquetDataset(sorted(log_dir.glob("*/date=*/part-*.parquet"))).read()
    assert sorted(table.column("request_id").to_pylist()) == sorted(ids)
    order = np.argsort(table.column("request_id").to_pylist())
    np.testing.assert_allclose(table.column("feature_0").to_numpy()[order], X[np.argsort(ids), 0])


def test_the_whole_loop_with_a_real_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("mlflow")
    from tabserve.cli import main
    from tabserve.training import train_file
    from tabserve.training.publish import register_bundle
    from tests.registry.stores import fresh_home

    home = fresh_home(tmp_path, monkeypatch, tmp_path_factory)
    frame = load_diabetes(as_frame=True).frame
    small = frame.sample(40, random_state=3).copy()
    small["target"] += np.random.default_rng(3).normal(scale=150, size=len(small))
    small.to_csv(tmp_path / "small.csv", index=False)
    bundle = train_file(tmp_path / "small.csv", "target", estimator="linear", name="diabetes", home=home).path
    register_bundle(bundle, "diabetes", alias="champion", home=home)
    log_dir = tmp_path / "payload"
    features = [c for c in frame.columns if c != "target"]
    with running_server("models:/diabetes@champion", "--payload-log", str(log_dir), "--payload-rotate-s", "0.5",
                        "--poll-interval-s", "1", "--home", str(home)) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        ids = []
        for start in range(0, len(frame), 20):
            rows = frame[features].iloc[start:start + 20].to_numpy().tolist()
            r = client.post("/api/v1/predict/batch", json={"data": rows})
            assert r.status_code == 200 and r.json()["model_version"] == "1"
            ids.append(r.headers["x-request-id"])
        items = [{"request_id": ids[i // 20], "row": i % 20, "label": float(y)}
                 for i, y in enumerate(frame["target"])]
        assert client.post("/api/v1/feedback", json={"feedback": items}).json()["accepted"] == len(frame)
        assert wait_for(lambda: client.get("/api/v1/models/diabetes/quality").json()["labelled"] == len(frame))
        assert main(["retrain", "diabetes", "--from-log", str(log_dir), "--home", str(home)]) == 0
        swapped = wait_for(lambda: client.post("/api/v1/predict", json={"data": frame[features].iloc[0].tolist()})
                           .json().get("model_version") == "2")
        assert swapped  # the promotion reached the server at its next poll, without a restart


def test_v2_requests_are_logged_as_v2(tmp_path: Path, demo_bundle: Path, demo_model) -> None:
    settings = Settings(model_path=demo_bundle, home=tmp_path / "home", payload_log_dir=tmp_path / "payload")
    rows = [[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -1.0, 0.5, 0.0, 2.0]]
    with TestClient(create_app(settings)) as client:
        ready(client)
        r = client.post(f"/v2/models/{demo_model.name}/infer", json={"inputs": [
            {"name": "input", "shape": [2, 5], "datatype": "FP64", "data": [v for r in rows for v in r]}]})
        assert r.status_code == 200, r.text
    table = pq.ParquetDataset(sorted((tmp_path / "payload").glob("*/date=*/part-*.parquet"))).read().to_pandas()
    assert table["protocol"].tolist() == ["v2", "v2"] and table["row"].tolist() == [0, 1]
    np.testing.assert_array_equal(table[demo_model.manifest.feature_names].to_numpy(), rows)
    np.testing.assert_allclose(table["prediction"], demo_model.predict(np.array(rows)))


def test_serve_refuses_a_payload_log_without_pyarrow(tmp_path: Path, demo_bundle: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    import sys

    from tabserve.cli import main

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as in the serving install without the [loop] extra
    code = main(["serve", str(demo_bundle), "--payload-log", str(tmp_path / "payload"), "--port", "0"])
    assert code == 2
    assert "pip install 'tabserve[loop]'" in capsys.readouterr().err
