"""A server restarted while its MLflow registry is down serves the version it served last, from the verified
copy in HOME/cache/mlflow, marked stale; it swaps to the registry's answer once the registry is back. Registry
calls are bounded: a reload or a pinned version answers 503 naming the registry instead of hanging."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tabserve.errors import ModelNotFound, RegistryUnavailable
from tabserve.registry import open_source
from tests.lifecycle.conftest import wait_for_model
from tests.registry.stores import mlflow_server, server_available
from tests.servers import free_port, running_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not server_available(), reason="mlflow server needs mlflow-skinny, flask and flask-cors "
                                                      "(pip install -e '.[dev]')"),
]

ROW = {"data": [5.1, 3.5, 1.4, 0.2]}  # iris


def _info(base: str) -> dict:
    return httpx.get(f"{base}/api/v1/models/flowers", timeout=10).json()


def _wait(base: str, check, timeout: float = 60) -> dict:
    import asyncio

    async def run() -> dict:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            return await wait_for_model(client, "flowers", check, timeout)

    return asyncio.run(run())


def test_a_restart_while_the_registry_is_down_serves_the_cached_version_until_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iris_bundle: Path):
    from tabserve.training.publish import register_bundle

    port = free_port()
    store, home = tmp_path / "mlflow-server", tmp_path / "home"
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    env = {"MLFLOW_TRACKING_URI": url, "TABSERVE_REGISTRY_TIMEOUT_S": "5", "TABSERVE_ADMIN_ROUTES": "on"}
    args = ("models:/flowers@champion", "--home", str(home), "--poll-interval-s", "0.3", "--no-access-log")
    with mlflow_server(store, port=port):
        register_bundle(iris_bundle, "flowers", alias="champion", home=home)
        with running_server(*args, env=env) as base:
            assert _info(base)["serving"]["version"] == "1"
        record = json.loads((home / "cache" / "mlflow" / "flowers" / "served-alias-champion.json").read_text())
        assert record["version"] == "1"
        # Meanwhile version 2 becomes the champion; then the registry goes down.
        register_bundle(iris_bundle, "flowers", alias="champion", home=home)

    with running_server(*args, env=env) as base:
        serving = _info(base)["serving"]
        assert serving["version"] == "1" and serving["stale"] is True and serving["served_from"] == "cache"
        assert "cannot be used" in serving["stale_reason"]
        answer = httpx.post(f"{base}/api/v1/predict", json=ROW, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert 'tabserve_model_served_from_cache{model="flowers",version="1"} 1.0' in httpx.get(
            f"{base}/metrics").text
        t0 = time.monotonic()
        reload = httpx.post(f"{base}/api/v1/admin/models/flowers/reload", timeout=60)
        assert reload.status_code == 503, reload.text
        assert reload.json()["error"] == "registry_unavailable" and url in reload.json()["detail"]
        pinned = httpx.post(f"{base}/v2/models/flowers/versions/2/infer", timeout=60, json={"inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW["data"]}]})
        assert pinned.status_code == 503 and url in pinned.json()["error"], pinned.text
        assert time.monotonic() - t0 < 45  # MLflow's own retries of a server that is down take minutes

        with mlflow_server(store, port=port):  # back: the champion, version 2, replaces the cached copy
            serving = _wait(base, lambda info: info["serving"].get("version") == "2")["serving"]
            assert "stale" not in serving
            metrics = httpx.get(f"{base}/metrics").text
            assert 'tabserve_model_served_from_cache{model="flowers",version="2"} 0.0' in metrics
    log = [json.loads(line) for line in running_server.last_output.splitlines() if line.startswith("{")]
    cached = [e for e in log if e.get("event") == "serving_cached_version"]
    assert len(cached) == 1 and cached[0]["model_version"] == "1" and url in cached[0]["reason"]


class _Silent:
    """A TCP port that accepts connections and never answers: a registry behind a dead proxy."""

    def __enter__(self) -> str:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_registry_that_does_not_answer_is_unavailable_within_the_bound(tmp_path, monkeypatch):
    with _Silent() as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")  # MLflow's default: it alone would wait minutes
        source = open_source("models:/flowers@champion", home=tmp_path, timeout_s=1)
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=r"did not answer within 1 s"):
            source.resolve()
        assert time.monotonic() - t0 < 30  # generous watchdog: the bound is 1 s
        assert source.cached("down") is None  # nothing was ever served from it: nothing to fall back on


def test_an_alias_that_does_not_exist_is_not_served_from_the_cache(tmp_path, monkeypatch, iris_bundle):
    from tabserve.registry.mlflow import client
    from tabserve.serving.manager import ModelManager
    from tabserve.training.publish import register_bundle

    with mlflow_server(tmp_path / "store") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        home = tmp_path / "home"
        register_bundle(iris_bundle, "flowers", alias="champion", home=home)
        first = ModelManager(home=home)
        assert first.load("models:/flowers@champion").version == "1"
        first.close()
        client(url).delete_registered_model_alias("flowers", "champion")
        restarted = ModelManager(home=home)
        with pytest.raises(ModelNotFound, match="has no alias 'champion'"):
            restarted.load("models:/flowers@champion")  # the registry answered: nothing served in its name
        assert restarted.model is None
        restarted.close()
