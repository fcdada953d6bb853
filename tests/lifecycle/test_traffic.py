"""A/B variants sticky by key, shadow divergence, pinned versions, several models, and the admin calls."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import tabserve
from tests.lifecycle.conftest import ROWS, Versions


def _client(folder: Path, **settings) -> TestClient:
    settings.setdefault("access_log", False)
    settings.setdefault("poll_interval_s", 0)
    settings.setdefault("admin_routes", "on")  # the admin calls without API keys (they are off by default)
    return TestClient(tabserve.create_app(tabserve.Settings(model_path=folder, **settings)))


def _wait(client: TestClient, check, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        traffic = client.get("/api/v1/traffic").json()
        if check(traffic):
            return traffic
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s: {traffic}")


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)


def test_ab_split_is_weighted_sticky_per_key_and_each_answer_matches_its_version(versions: Versions,
                                                                                   tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")  # the folder serves its newest version: 2
    traffic = {"demo": {"variants": {"1": 30}}}  # 30 % to version 1, the rest to the served version
    with _client(folder, traffic=traffic) as c:
        _ready(c)
        _wait(c, lambda t: all(v["state"] == "ready" for v in t["demo"]["variants"]))
        picks = {}
        for i in range(300):
            key = f"user-{i}"
            r = c.post("/api/v1/predict", json={"data": ROWS[i % 3]}, headers={"X-Tabserve-Key": key})
            assert r.status_code == 200
            body = r.json()
            assert body["prediction"] == pytest.approx(float(versions.expected[body["model_version"]][i % 3]),
                                                       rel=1e-12)
            assert r.headers["X-Tabserve-Variant"] == ("1" if body["model_version"] == "1" else "primary")
            picks[key] = body["model_version"]
            again = c.post("/api/v1/predict", json={"data": ROWS[0]}, headers={"X-Tabserve-Key": key})
            assert again.json()["model_version"] == picks[key]  # sticky: the same key, the same variant
        share = sum(v == "1" for v in picks.values()) / len(picks)
        assert 0.2 < share < 0.4, share
        # v2 infer is routed by the same policy
        r = c.post("/v2/models/demo/infer", json={"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 5],
                                                               "data": ROWS[0]}]},
                   headers={"X-Tabserve-Key": "user-0"})
        assert r.status_code == 200 and r.json()["model_version"] == picks["user-0"]
        described = c.get("/api/v1/traffic").json()["demo"]
        assert {v["label"]: (v["weight"], v["version"]) for v in described["variants"]} == {
            "1": (0.3, "1"), "primary": (0.7, "2")}


def test_shadow_scores_every_request_in_the_background_and_records_divergence(versions: Versions,
                                                                              tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        r = c.put("/api/v1/admin/traffic/demo", json={"shadow": "1"})
        assert r.status_code == 200, r.text
        assert r.json()["shadow"]["version"] == "1"
        for i in range(30):
            r = c.post("/api/v1/predict", json={"data": ROWS[i % 3]})
            assert r.json()["model_version"] == "2"  # the answer always comes from the served version
        t = _wait(c, lambda t: t["demo"]["shadow"]["compared_rows"] == 30)
        shadow = t["demo"]["shadow"]
        diffs = [abs(versions.expected["2"][i % 3] - versions.expected["1"][i % 3]) for i in range(30)]
        assert shadow["mean_abs_diff"] == pytest.approx(sum(diffs) / 30, rel=1e-9)
        assert shadow["max_abs_diff"] == pytest.approx(max(diffs), rel=1e-9)
        assert shadow["dropped"] == 0 and shadow["errors"] == 0
        assert shadow["compared_versions"] == [{"primary": "2", "shadow": "1"}]
        metrics = c.get("/metrics").text
        assert 'tabserve_shadow_rows_total{model="demo",shadow_version="1"} 30.0' in metrics
        assert c.delete("/api/v1/admin/traffic/demo").json()["shadow"] is None


def test_a_full_shadow_queue_drops_copies_and_counts_them(versions: Versions, tmp_path: Path):
    from tabserve.observability.metrics import Metrics
    from tabserve.serving.manager import ModelManager
    from tabserve.serving.traffic import TrafficPolicy

    folder = versions.model_dir(tmp_path, "1", "2")
    metrics = Metrics(drift_window_rows=0)
    manager = ModelManager(shadow_queue_size=1, observer=metrics)
    manager.traffic.observer = metrics
    manager.load(folder)
    for slot in manager.traffic.set_policy("demo", TrafficPolicy(shadow="1")):
        slot.load()
    model = manager.current()

    async def burst() -> None:
        x = model.schema.rows(ROWS, max_rows=10)
        pred = model.run(x)
        for _ in range(5):  # no await in between: the shadow worker has not taken the first copy yet
            manager.traffic.shadow("demo", model, x, pred)
        while manager.traffic.stats["demo"].compared_requests < 1:
            await asyncio.sleep(0.01)

    asyncio.run(burst())
    stats = manager.traffic.stats["demo"]
    assert (stats.compared_requests, stats.dropped) == (1, 4)
    assert 'tabserve_shadow_dropped_total{model="demo"} 4.0' in metrics.exposition().decode()
    manager.close()


def test_pinned_versions_answer_next_to_the_served_one(versions: Versions, tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder, max_pinned_versions=1) as c:
        _ready(c)
        r = c.post("/api/v1/models/demo/versions/1/predict", json={"data": ROWS[1]})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert r.json()["prediction"] == pytest.approx(float(versions.expected["1"][1]), rel=1e-12)
        r = c.post("/api/v1/models/demo/versions/1/predict/batch", json={"data": ROWS})
        assert r.json()["predictions"] == pytest.approx(list(versions.expected["1"]), rel=1e-12)
        r = c.post("/v2/models/demo/versions/1/infer",
                   json={"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 5], "data": ROWS[2]}]})
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert r.json()["outputs"][0]["data"][0] == pytest.approx(float(versions.expected["1"][2]), rel=1e-12)
        assert c.post("/api/v1/predict", json={"data": ROWS[1]}).json()["model_version"] == "2"
        assert c.get("/v2/models/demo/versions/1/ready").json()["ready"] is True
        index = c.post("/v2/repository/index", json={}).json()
        assert {(e["name"], e["version"], e["state"]) for e in index} == {("demo", "2", "READY"),
                                                                         ("demo", "1", "READY")}
        r = c.post("/api/v1/models/demo/versions/9/predict", json={"data": ROWS[1]})
        assert r.status_code == 404 and r.json()["detail"] == "model 'demo' has no version '9'; the served " \
                                                              "version is '2'"
        assert c.post("/api/v1/models/nope/predict", json={"data": ROWS[1]}).status_code == 404
        r = c.post("/v2/models/demo/versions/..%2F..%2Fetc/infer", json={"inputs": []})
        assert r.status_code == 404


def test_several_models_each_at_its_own_url(versions: Versions, iris_bundle: Path, tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1")
    with _client(folder, models={"iris": str(iris_bundle)}) as c:
        _ready(c)
        assert c.post("/api/v1/predict", json={"data": ROWS[0]}).json()["model_name"] == "demo"
        r = c.post("/api/v1/models/iris/predict", json={"data": [5.1, 3.5, 1.4, 0.2]})
        assert r.status_code == 200 and r.json()["prediction"] == "setosa" and r.json()["model_name"] == "iris"
        r = c.post("/v2/models/iris/infer", json={"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4],
                                                              "data": [6.7, 3.0, 5.2, 2.3]}]})
        assert r.status_code == 200 and "virginica" in json.dumps(r.json()["outputs"])
        names = [m["name"] for m in c.get("/api/v1/models").json()["models"]]
        assert names == ["demo", "iris"]
        r = c.post("/api/v1/models/demo/predict", json={"data": [5.1, 3.5, 1.4, 0.2]})
        assert r.status_code == 422 and "5" in r.json()["detail"]  # demo wants 5 features, not iris's 4


def test_reload_swaps_a_new_version_and_refuses_a_broken_one_keeping_the_old(versions: Versions, tmp_path: Path):
    from tests.lifecycle.conftest import publish

    folder = versions.model_dir(tmp_path, "1")
    with _client(folder) as c:
        _ready(c)
        r = c.post("/api/v1/admin/models/demo/reload")
        assert r.status_code == 200 and r.json()["reloaded"] == [{"slot": "demo", "outcome": "loaded"}]
        publish(versions, folder, "2")
        assert c.post("/api/v1/admin/models/demo/reload").status_code == 200
        assert c.post("/api/v1/predict", json={"data": ROWS[0]}).json()["model_version"] == "2"
        publish(versions, folder, "3")
        r = c.post("/api/v1/admin/models/demo/reload")
        assert r.status_code == 422
        assert "sha256" in r.json()["detail"] and "version '2' is still served" in r.json()["detail"]
        assert c.post("/api/v1/predict", json={"data": ROWS[0]}).json()["model_version"] == "2"
        assert c.get("/api/v1/models/demo").json()["serving"]["last_failure"]["version"] == "3"
        assert c.post("/api/v1/admin/models/nope/reload").status_code == 404


@pytest.mark.parametrize(("body", "message"), [
    ({"variants": {"1": -5}}, "weights are numbers >= 0"),
    ({"variants": {"1": 0}}, "add up to 0"),
    ({"variants": {"champion": 10}}, "an alias only means something for a registry model"),
    ({"weights": {"1": 10}}, "weights"),
    ("not json", "not valid JSON"),
])
def test_bad_traffic_policies_are_422_naming_the_problem(versions: Versions, tmp_path: Path, body, message):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        kwargs = {"content": body} if isinstance(body, str) else {"json": body}
        r = c.put("/api/v1/admin/traffic/demo", **kwargs)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
        assert c.put("/api/v1/admin/traffic/nope", json={"shadow": "1"}).status_code == 404
        assert c.post("/api/v1/predict", json={"data": ROWS[0]}).json()["model_version"] == "2"


def test_a_variant_that_cannot_load_leaves_its_share_on_the_primary(versions: Versions, tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        r = c.put("/api/v1/admin/traffic/demo", json={"variants": {"7": 50}})
        assert r.status_code == 200
        variant = next(v for v in r.json()["variants"] if v["label"] == "7")
        assert variant["state"] == "failed" and "no bundle" in variant["last_failure"]["error"]
        for i in range(20):
            r = c.post("/api/v1/predict", json={"data": ROWS[0]}, headers={"X-Tabserve-Key": f"k{i}"})
            assert r.status_code == 200 and r.json()["model_version"] == "2"


def test_admin_calls_need_the_admin_scope(versions: Versions, tmp_path: Path):
    from tabserve.api.auth import hash_key

    keys = json.dumps([{"name": "app", "sha256": hash_key("app-key"), "scopes": ["predict"]},
                       {"name": "ops", "sha256": hash_key("ops-key"), "scopes": ["predict", "admin"]}])
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder, api_keys=keys) as c:
        _ready(c)
        r = c.put("/api/v1/admin/traffic/demo", json={"shadow": "1"}, headers={"X-API-Key": "app-key"})
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        r = c.put("/api/v1/admin/traffic/demo", json={"shadow": "1"}, headers={"X-API-Key": "ops-key"})
        assert r.status_code == 200
        assert c.get("/api/v1/traffic", headers={"X-API-Key": "app-key"}).status_code == 200


def _info(client: TestClient, version: str) -> float:
    """tabserve_model_info of ``version``: 1 while a slot or a pin holds it, 0 once released."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("tabserve_model_info{") and f'version="{version}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_removed_variant_is_released_and_a_reload_after_it_works(versions: Versions, tmp_path: Path):
    """The issue: DELETE left the variant's slot behind, still loaded and polled, so a reload answered 422 once
    the variant's folder was gone."""
    import shutil

    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        manager = c.app.state.manager
        assert c.put("/api/v1/admin/traffic/demo", json={"variants": {"1": 50}, "shadow": "1"}).status_code == 200
        _wait(c, lambda t: t["demo"]["variants"][0]["state"] == "ready")
        assert list(manager.slots) == ["demo", "demo@1"] and _info(c, "1") == 1
        assert c.delete("/api/v1/admin/traffic/demo").status_code == 200
        assert list(manager.slots) == ["demo"]
        deadline = time.monotonic() + 20
        while _info(c, "1") != 0:  # released on the loader thread
            assert time.monotonic() < deadline
            time.sleep(0.05)
        shutil.rmtree(folder / "1")
        r = c.post("/api/v1/admin/models/demo/reload")
        assert r.status_code == 200 and [x["slot"] for x in r.json()["reloaded"]] == ["demo"]


def test_replacing_a_policy_releases_what_it_no_longer_names(versions: Versions, tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        manager = c.app.state.manager
        assert c.put("/api/v1/admin/traffic/demo", json={"variants": {"1": 50}}).status_code == 200
        assert c.put("/api/v1/admin/traffic/demo", json={"shadow": "1"}).status_code == 200
        assert list(manager.slots) == ["demo", "demo@1"]  # the same version, kept
        assert c.put("/api/v1/admin/traffic/demo", json={"variants": {"primary": 100}}).status_code == 200
        assert list(manager.slots) == ["demo"]
        # a refused policy leaves nothing behind either
        r = c.put("/api/v1/admin/traffic/demo", json={"variants": {"1": 10, "champion": 10}})
        assert r.status_code == 422 and list(manager.slots) == ["demo"]


def test_put_delete_rounds_come_back_to_the_same_slots(versions: Versions, tmp_path: Path):
    folder = versions.model_dir(tmp_path, "1", "2")
    with _client(folder) as c:
        _ready(c)
        manager = c.app.state.manager
        for i in range(60):
            body = {"variants": {"1": 10}} if i % 2 else {"shadow": "1", "variants": {"2": 5}}
            assert c.put("/api/v1/admin/traffic/demo", json=body).status_code == 200
            assert c.delete("/api/v1/admin/traffic/demo").status_code == 200
        assert list(manager.slots) == ["demo"] and manager.traffic.stats == {}
        manager.loader.submit(lambda: None).result(timeout=30)  # the releases queued on the loader are done
        assert _info(c, "1") == 0 and _info(c, "2") == 1
