"""deploy/k8s as kubectl renders it, run by ``podman kube play``: the Deployment's pod (security context, read-only
root, emptyDir volumes, the ConfigMap, the optional API-key Secret absent) starts from the CPU image and predicts.

Changed from the rendered output only where a one-machine podman differs from a cluster: the image (the one the
tests built), one replica, and a hostPort on 127.0.0.1 (podman publishes no port without one)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

import tabserve
from tests.deploy.engine import Engine
from tests.servers import READY_IN_A_ROW, free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


def rendered() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its `kubectl kustomize` renders deploy/k8s)")
    done = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


@pytest.fixture()
def played(engine: Engine, image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if engine.name != "podman":
        pytest.skip("`podman kube play` needs podman (the engine found is docker)")
    port = free_port()
    docs = [d for d in rendered() if d["kind"] in ("ConfigMap", "Deployment")]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    (http,) = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    play = tmp_path / "play.yaml"
    play.write_text(yaml.safe_dump_all(docs))
    engine.run("kube", "play", str(play), timeout=180)
    name = f"{deployment['metadata']['name']}-pod-0-{container['name']}"  # podman's container name
    try:
        yield f"http://127.0.0.1:{port}", name
    finally:
        engine.run("kube", "down", str(play), check=False, timeout=120)


def wait_ready(base: str, engine: Engine, name: str, timeout: float = 120) -> None:
    deadline, in_a_row = time.monotonic() + timeout, 0  # a watchdog, not a timing
    while in_a_row < READY_IN_A_ROW:
        assert time.monotonic() < deadline, f"not ready within {timeout} s:\n{engine.logs(name)}"
        try:
            in_a_row = in_a_row + 1 if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            in_a_row = 0
        if not in_a_row:
            state = engine.inspect("container", name)["State"]
            assert state.get("Running"), f"{name} exited {state.get('ExitCode')}:\n{engine.logs(name)}"
            time.sleep(0.5)


def test_the_rendered_deployment_runs_under_podman_kube_play_and_predicts(
        engine: Engine, played: tuple[str, str], tmp_path: Path):
    base, name = played
    wait_ready(base, engine, name)
    response = httpx.post(f"{base}/api/v1/predict", json={"data": ROW}, timeout=10)
    assert response.status_code == 200, response.text  # no placeholder key: no 401
    engine.run("cp", f"{name}:/opt/tabserve/models/demo", str(tmp_path / "demo"))
    expected = float(tabserve.load(tmp_path / "demo" / "1").predict([ROW])[0])
    assert response.json()["prediction"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    logs = engine.logs(name)
    assert "api_keys_off" in logs, logs
    facts = engine.inspect("container", name)
    assert facts["HostConfig"]["ReadonlyRootfs"] is True
    assert facts["Config"]["User"].startswith("10001")
