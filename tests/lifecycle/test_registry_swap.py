"""Serving models:/NAME@champion from the MLflow registry (embedded SQLite store) while the alias moves twice:
to a good version, then to one whose artifacts were damaged. No request fails; each answer matches the
version it names; the damaged version shows at the models endpoint and in the metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.lifecycle.conftest import ROWS, Versions, wait_for_model
from tests.servers import running_server

pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
pytestmark = pytest.mark.slow


def _registry(home: Path, versions: Versions) -> object:
    from mlflow import MlflowClient

    from tabserve.registry.mlflow import tracking_uri
    from tabserve.training.publish import register_bundle

    register_bundle(versions.v1, "credit", alias="champion", home=home)
    register_bundle(versions.v2, "credit", home=home)
    third = register_bundle(versions.v2, "credit", home=home)
    client = MlflowClient(tracking_uri(home), registry_uri=tracking_uri(home))
    run = client.get_run(client.get_model_version("credit", third.version).run_id)
    damaged = Path(run.info.artifact_uri.removeprefix("file://")) / "model" / "bundle" / "model.onnx"
    damaged.write_bytes(damaged.read_bytes()[:-16] + b"\0" * 16)  # after registration: only a download sees it
    return client


async def _load(base: str, stop: asyncio.Event, out: list) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        i = 0
        while not stop.is_set():
            r = await client.post("/api/v1/predict", json={"data": ROWS[i % 3]})
            out.append((i % 3, r.status_code, r.json() if r.status_code == 200 else r.text))
            i += 1


async def _move_alias_under_load(base: str, registry) -> list:
    results: list = []
    stop = asyncio.Event()
    clients = [asyncio.create_task(_load(base, stop, results)) for _ in range(4)]
    async with httpx.AsyncClient(base_url=base, timeout=10) as admin:
        await asyncio.sleep(0.5)
        registry.set_registered_model_alias("credit", "champion", "2")
        await wait_for_model(admin, "credit", lambda info: info["version"] == "2")
        await asyncio.sleep(0.5)
        registry.set_registered_model_alias("credit", "champion", "3")
        await wait_for_model(admin, "credit", lambda info: (info["serving"].get("last_failure") or {}).get("version") == "3")
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    return results


def test_alias_moves_are_served_without_a_failed_request(versions: Versions, tmp_path: Path):
    home = tmp_path / "home"
    registry = _registry(home, versions)
    env = {"TABSERVE_HOME": str(home)}
    with running_server("models:/credit@champion", "--poll-interval-s", "0.2", "--no-access-log", env=env) as base:
        results = asyncio.run(_move_alias_under_load(base, registry))
        final = httpx.get(f"{base}/api/v1/models/credit").json()
        metrics = httpx.get(f"{base}/metrics").text
        ready = httpx.get(f"{base}/v2/models/credit/ready").json()
        pinned = httpx.post(f"{base}/api/v1/models/credit/versions/1/predict", json={"data": ROWS[2]})
        missing = httpx.post(f"{base}/v2/models/credit/versions/99/infer", json={"inputs": []})
    assert {status for _, status, _ in results} == {200}, [r for r in results if r[1] != 200][:3]
    expected = {"1": versions.expected["1"], "2": versions.expected["2"]}  # registry version -> bundle answers
    seen = set()
    for row, _, body in results:
        assert body["model_name"] == "credit"
        seen.add(body["model_version"])
        assert body["prediction"] == pytest.approx(float(expected[body["model_version"]][row]), rel=1e-12)
    assert seen == {"1", "2"}
    assert final["version"] == "2" and final["manifest_version"] == "2"
    assert final["serving"]["uri"] == "models:/credit@champion"
    assert "sha256" in final["serving"]["last_failure"]["error"]
    assert 'tabserve_model_load_failures_total{model="credit"} 1.0' in metrics
    assert ready == {"name": "credit", "ready": True}
    # an explicit version answers next to the alias; an unknown one is a 404 naming the served version
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "1"
    assert pinned.json()["prediction"] == pytest.approx(float(expected["1"][2]), rel=1e-12)
    assert missing.status_code == 404 and "no version '99'" in missing.json()["error"], missing.text
