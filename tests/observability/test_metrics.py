"""GET /metrics after real requests: counts and labels, histogram buckets, batches, models, predictions,
the admission-control hooks, and several workers adding up through a real server."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import Histogram

import tabserve
from tabserve.observability.metrics import LATENCY_BUCKETS, METRICS_PATH, Metrics
from tabserve.observability.multiproc import (
    MULTIPROC_ENV,
    PREPARED_ENV,
    default_multiprocess_dir,
    prepare_multiprocess_dir,
    remove_multiprocess_dir,
)
from tabserve.observability.predictions import ValueHistogram, prediction_buckets
from tabserve.serving.manager import ModelManager
from tests.observability.scrape import label_values, samples, total
from tests.servers import running_server

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
V1 = "/api/v1/predict"
V2 = "/v2/models/{model_name}/infer"


def v2_body(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "X", "shape": [len(rows), 5], "datatype": "FP64",
                        "data": [v for r in rows for v in r]}]}


def test_requests_are_counted_by_route_template_status_model_version_and_variant(client):
    assert client.post(V1, json={"data": ROW}).status_code == 200
    assert client.post(V1, json={"data": ROW}).status_code == 200
    assert client.post(V1, json={"data": ROW[:4]}).status_code == 422
    assert client.post("/v2/models/demo/infer", json=v2_body([ROW])).status_code == 200
    assert client.post("/v2/models/demo/infer", json={"inputs": []}).status_code == 400
    assert client.get("/no/such/path").status_code == 404
    text = client.get(METRICS_PATH).text

    demo = {"model": "demo", "version": "1", "variant": "default"}
    assert total(text, "tabserve_requests_total", route=V1, status="200", **demo) == 2
    assert total(text, "tabserve_requests_total", route=V1, status="422", **demo) == 1
    assert total(text, "tabserve_requests_total", route=V2, status="200", **demo) == 1
    assert total(text, "tabserve_requests_total", route=V2, status="400", **demo) == 1
    # an unknown path is one series, not one per path
    assert total(text, "tabserve_requests_total", route="unmatched", status="404", model="") == 1
    assert "/no/such/path" not in text
    assert total(text, "tabserve_request_duration_seconds_count", route=V1, **demo) == 3
    # the scrape itself is in flight while it is answered
    assert total(text, "tabserve_requests_in_flight") == 1


def test_latency_histograms_have_sub_millisecond_buckets(client):
    client.post(V1, json={"data": ROW})
    text = client.get(METRICS_PATH).text
    for name in ("tabserve_request_duration_seconds", "tabserve_queue_wait_seconds",
                 "tabserve_inference_duration_seconds"):
        buckets = label_values(text, f"{name}_bucket", "le")
        assert {"0.0001", "0.00025", "0.0005", "0.001", "10.0", "+Inf"} <= buckets, name
    assert LATENCY_BUCKETS[0] == 0.0001 and LATENCY_BUCKETS[-1] == 10.0
    # a one-row prediction's onnxruntime call takes well under a millisecond
    assert total(text, "tabserve_inference_duration_seconds_bucket", le="0.001") == 1


def test_the_batch_size_histogram_sees_a_batch_of_n_rows(client):
    rows = [ROW] * 40
    assert client.post("/api/v1/predict/batch", json={"data": rows}).status_code == 200
    assert client.post("/v2/models/demo/infer", json=v2_body([ROW] * 3)).status_code == 200
    text = client.get(METRICS_PATH).text
    labels = {"model": "demo", "version": "1"}
    assert total(text, "tabserve_batch_rows_count", **labels) == 2
    assert total(text, "tabserve_batch_rows_sum", **labels) == 43
    assert total(text, "tabserve_batch_rows_bucket", le="2.0", **labels) == 0
    assert total(text, "tabserve_batch_rows_bucket", le="4.0", **labels) == 1  # the 3 rows
    assert total(text, "tabserve_batch_rows_bucket", le="32.0", **labels) == 1
    assert total(text, "tabserve_batch_rows_bucket", le="64.0", **labels) == 2  # and the 40
    assert total(text, "tabserve_rows_scored_total", **labels) == 43
    assert total(text, "tabserve_queue_wait_seconds_count", **labels) == 2


def test_concurrent_requests_share_one_batch(demo_model):
    metrics = Metrics()
    manager = ModelManager(model=demo_model, observer=metrics)

    async def five() -> None:
        batcher = manager.batcher(demo_model)
        x = demo_model.schema.row(ROW)
        await asyncio.gather(*(batcher.predict(x) for _ in range(5)))

    asyncio.run(five())
    manager.close()
    text = metrics.exposition().decode()
    # the first of the tick is scored at once, the other four share one onnxruntime call
    assert total(text, "tabserve_batch_rows_count") == 2 and total(text, "tabserve_batch_rows_sum") == 5
    assert total(text, "tabserve_batch_rows_bucket", le="1.0") == 1
    assert total(text, "tabserve_batch_rows_bucket", le="4.0") == 2


def test_model_info_and_load_time(client, demo_model):
    text = client.get(METRICS_PATH).text
    (info,) = [(labels, v) for n, labels, v in samples(text) if n == "tabserve_model_info"]
    assert info[1] == 1
    assert info[0] == {"model": "demo", "version": "1", "task": "regression", "features": "5",
                       "sha256": demo_model.manifest.model.sha256[:12]}
    assert total(text, "tabserve_model_load_seconds", model="demo", version="1") > 0


def test_a_model_loaded_by_the_server_is_reported_and_a_replaced_one_drops_to_0(make_client, demo_bundle):
    with make_client(model_path=str(demo_bundle), admin_routes="on") as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = client.get(METRICS_PATH).text
        assert total(text, "tabserve_model_info", model="demo", version="1") == 1
        assert client.post("/v2/repository/models/demo/unload").status_code == 200
        text = client.get(METRICS_PATH).text
        assert total(text, "tabserve_model_info", model="demo", version="1") == 0
        assert total(text, "tabserve_drift_window_rows", model="demo") == 0  # its window is gone
        assert client.post("/v2/repository/models/demo/load").status_code == 200
        assert client.post(V1, json={"data": ROW}).status_code == 200
        text = client.get(METRICS_PATH).text
        assert total(text, "tabserve_model_info", model="demo", version="1") == 1
        assert total(text, "tabserve_drift_window_rows", model="demo") == 1  # a fresh window


def test_regression_predictions_fill_a_histogram_whose_buckets_come_from_training_like_rows(client, demo_model):
    buckets = prediction_buckets(demo_model)
    assert len(buckets) >= 8 and list(buckets) == sorted(buckets)
    predicted = float(demo_model.predict([ROW])[0])
    client.post(V1, json={"data": ROW})
    text = client.get(METRICS_PATH).text
    assert total(text, "tabserve_prediction_value_count", model="demo", version="1") == 1
    above = next(b for b in buckets if b >= predicted)
    assert total(text, "tabserve_prediction_value_bucket", model="demo", le=str(float(above))) == 1


def test_recorded_prediction_quantiles_are_the_buckets_when_the_manifest_has_them(demo_model):
    training = {**demo_model.manifest.training, "prediction_quantiles": {"probs": [0, 0.5, 1],
                                                                         "values": [-10.0, 0.0, 12.345]}}
    model = tabserve.Model(demo_model.bundle, demo_model.runtime)
    model.manifest = demo_model.manifest.model_copy(update={"training": training})
    assert prediction_buckets(model) == (-10.0, 0.0, 12.3)


def test_a_large_batch_is_counted_like_one_observe_per_value():
    values = np.random.default_rng(0).normal(size=500) * 10
    bulk = ValueHistogram("m", "1", (-5.0, 0.0, 5.0))
    bulk.record(values)
    one_by_one = Histogram("x", "x", ["model", "version"], buckets=(-5.0, 0.0, 5.0), registry=None)
    for v in values:
        one_by_one.labels("m", "1").observe(float(v))
    got = [(s.labels["le"], s.value) for s in bulk.histogram.collect()[0].samples if s.name.endswith("_bucket")]
    want = [(s.labels["le"], s.value) for s in one_by_one.collect()[0].samples if s.name.endswith("_bucket")]
    assert got == want
    assert bulk._child._sum.get() == pytest.approx(values.sum())


def test_classifiers_count_predictions_per_class(make_client, iris_model):
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.0, 3.4, 1.5, 0.2]]
    with make_client(iris_model) as client:
        labels = client.post("/api/v1/predict/batch", json={"data": rows}).json()["predictions"]
        client.post(V1, json={"data": rows[1]})
        text = client.get(METRICS_PATH).text
    name = iris_model.name
    for cls in ("setosa", "versicolor", "virginica"):  # every class, even one never predicted
        expected = labels.count(cls) + (cls == labels[1])
        assert total(text, "tabserve_predictions_total", model=name, **{"class": cls}) == expected
    assert "tabserve_prediction_value_bucket" not in text


def test_rate_limit_and_shedding_hooks(client):
    metrics = client.app.state.metrics
    metrics.rate_limited("api_key")
    metrics.rate_limited("api_key")
    metrics.rate_limited("ip")
    metrics.shed("overloaded")
    text = client.get(METRICS_PATH).text
    assert total(text, "tabserve_rate_limited_total", key_kind="api_key") == 2
    assert total(text, "tabserve_rate_limited_total", key_kind="ip") == 1
    assert total(text, "tabserve_shed_total", reason="overloaded") == 1


def test_metrics_off_means_no_endpoint_but_the_hooks_still_answer(make_client, demo_model):
    with make_client(demo_model, metrics=False) as client:
        assert client.post(V1, json={"data": ROW}).status_code == 200
        assert client.get(METRICS_PATH).status_code == 404
        client.app.state.metrics.shed("overloaded")  # admission control calls it unconditionally


def test_a_failing_recorder_never_fails_a_prediction(client, monkeypatch):
    metrics = client.app.state.metrics
    (series,) = metrics._models.values()

    def broken(values: np.ndarray) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(series.predictions, "record", broken)
    assert client.post(V1, json={"data": ROW}).status_code == 200


# -- several workers -------------------------------------------------------------------------------------------


def test_the_multiprocess_folder_is_only_for_several_workers_and_keeps_foreign_files(tmp_path, monkeypatch):
    for name in (MULTIPROC_ENV, PREPARED_ENV):  # set, then unset: monkeypatch restores the environment after
        monkeypatch.setenv(name, "unset after the test")
        monkeypatch.delenv(name)
    one = tabserve.Settings(home=tmp_path, workers=1)
    assert prepare_multiprocess_dir(one) is None and MULTIPROC_ENV not in os.environ
    two = tabserve.Settings(home=tmp_path, workers=2, port=8123)
    folder = default_multiprocess_dir(two)
    folder.mkdir(parents=True)
    for stale in ("counter_1.db", "gauge_livesum_1.db", "drift-1-abc.json", "drift-1-abc.bin"):
        (folder / stale).write_bytes(b"stale")
    (folder / "notes.txt").write_text("not ours")
    assert prepare_multiprocess_dir(two) == folder == tmp_path / "metrics" / "8123"
    assert os.environ[MULTIPROC_ENV] == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    remove_multiprocess_dir(two, folder)
    assert not folder.exists()
    assert prepare_multiprocess_dir(tabserve.Settings(home=tmp_path, workers=2, metrics=False)) is None


def _stale_counter(folder: Path) -> None:
    """What a previous run leaves: a counter file of a process long gone, here with 1000 predictions."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    labels = {"route": V1, "status": "200", "model": "demo", "version": "1", "variant": "default"}
    stale = MmapedDict(str(folder / "counter_999999.db"))
    stale.write_value(mmap_key("tabserve_requests", "tabserve_requests_total", list(labels), list(labels.values()),
                               "stale"), 1000.0, 0.0)
    stale.close()
    (folder / "drift-999999-0123456789abcdef.json").write_text("{}")


def _served_by(folder: Path) -> set[str]:
    """The worker pids whose counter file holds a v1 prediction."""
    from prometheus_client.mmap_dict import MmapedDict

    return {path.stem.split("_")[1] for path in folder.glob("counter_*.db")
            if any('"tabserve_requests_total"' in key and V1 in key and value
                   for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)))}


@pytest.mark.slow
def test_two_workers_add_up_and_stale_files_are_cleaned_at_start(demo_bundle, tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    _stale_counter(folder)
    env = {"TABSERVE_METRICS_DIR": str(folder), "TABSERVE_ACCESS_LOG": "false"}
    with running_server(str(demo_bundle), "--workers", "2", env=env) as base:
        assert not (folder / "counter_999999.db").exists()
        assert not list(folder.glob("drift-999999-*"))
        sent = 0
        while sent < 20 or (len(_served_by(folder)) < 2 and sent < 200):
            # fresh connections, so that both workers accept some
            assert httpx.post(f"{base}{V1}", json={"data": ROW}).status_code == 200
            sent += 1
        assert len(_served_by(folder)) == 2, "both workers served predictions"
        for _ in range(6):  # whichever worker answers, it reports both
            text = httpx.get(f"{base}{METRICS_PATH}").text
            assert total(text, "tabserve_requests_total", route=V1, status="200") == sent
            assert total(text, "tabserve_rows_scored_total", model="demo") == sent
            assert total(text, "tabserve_drift_window_rows", model="demo") == min(sent, 2 * 1000)
            assert total(text, "tabserve_model_info", model="demo", version="1") == 1
            assert len(label_values(text, "tabserve_feature_psi", "feature")) == 5
            assert total(text, "tabserve_requests_in_flight") == 1
    assert running_server.last_exit_code == 0
    assert not list(folder.glob("drift-*")), "workers remove their drift windows when they stop"


def test_multiprocess_mode_in_one_process_even_when_prometheus_client_was_imported_first(demo_model, tmp_path,
                                                                                       monkeypatch):
    from prometheus_client import values

    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = Metrics.from_settings(tabserve.Settings())
    assert metrics.multiproc_dir == tmp_path
    metrics.model_loaded(demo_model)
    x = demo_model.schema.as_input(np.array([ROW] * 3), single=False)
    metrics.batch_recorder(demo_model)(3, 0.0002, x, demo_model.run(x))
    metrics.request_finished(V1, 200, "demo", "1", None, 0.0004)
    assert list(tmp_path.glob("counter_*.db")) and list(tmp_path.glob("drift-*.bin"))
    text = metrics.exposition().decode()  # read back from the files, as another worker would
    assert total(text, "tabserve_requests_total", route=V1, status="200", variant="default") == 1
    assert total(text, "tabserve_rows_scored_total", model="demo") == 3
    assert total(text, "tabserve_prediction_value_count", model="demo") == 3
    assert total(text, "tabserve_drift_window_rows", model="demo") == 3
    assert total(text, "tabserve_model_info", model="demo", version="1") == 1
    metrics.close()
    assert not list(tmp_path.glob("drift-*")) and not list(tmp_path.glob("gauge_live*"))


def test_a_trained_regressor_records_its_prediction_quantiles_and_the_server_takes_them(tmp_path):
    """The buckets come from the manifest (the holdout's predictions), not from scoring rows at each load."""
    import pandas as pd

    from tabserve.training.trainer import train_file

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = 3 * frame["a"] - frame["b"] + rng.normal(scale=0.1, size=300)
    frame.to_csv(tmp_path / "d.csv", index=False)
    train_file(tmp_path / "d.csv", "y", estimator="linear", name="q", dest=tmp_path / "b")
    model = tabserve.load(tmp_path / "b")
    recorded = model.manifest.training["prediction_quantiles"]
    assert recorded["probs"][0] == 0.0 and recorded["probs"][-1] == 1.0
    assert prediction_buckets(model) == tuple(sorted({float(f"{v:.3g}") for v in recorded["values"]}))
