"""The CPU image, built and run for real (podman, else docker): a correct prediction from the baked demo model
and from a bundle given at run time, non-root and read-only friendly, serving dependencies only, under the size
budget, a healthy HEALTHCHECK, and a clean stop (exit 0) on SIGTERM."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tabserve
from tests.deploy.engine import TAG, TRAIN_TAG, Engine, wait_ready
from tests.servers import free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

MAX_IMAGE_BYTES = 400_000_000
SEED_ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
BAKED = "/opt/tabserve/models/demo"


@pytest.fixture()
def container(engine: Engine, image: str) -> Iterator[list[str]]:
    """Names of the containers a test starts; removed afterwards whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        engine.remove(name)


def start(engine: Engine, names: list[str], *options: str) -> tuple[str, str]:
    name = f"tabserve-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    engine.run("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", *options, TAG)
    names.append(name)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, engine, name)
    return name, base


def predict(base: str) -> dict:
    response = httpx.post(f"{base}/api/v1/predict", json={"data": SEED_ROW}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def stop_cleanly(engine: Engine, name: str) -> str:
    """``podman stop`` sends the image's STOPSIGNAL (SIGTERM); the server must drain and exit 0 by itself."""
    engine.run("stop", "-t", "30", name, timeout=60)
    state = engine.inspect("container", name)["State"]
    logs = engine.logs(name)
    assert state["ExitCode"] == 0, logs
    assert "Shutting down" in logs and "Application shutdown complete." in logs, logs
    return logs


def test_the_image_fits_the_size_budget_and_declares_how_to_run_it(engine: Engine, image: str):
    info = engine.inspect("image", image)
    assert info["Size"] <= MAX_IMAGE_BYTES, f"image is {info['Size'] / 1e6:.0f} MB"
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config.get("StopSignal") in ("SIGTERM", "15")
    healthcheck = config.get("Healthcheck") or info["Healthcheck"]  # docker keeps it in Config, podman beside
    assert "/readyz" in " ".join(healthcheck["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TABSERVE_HOST"] == "0.0.0.0" and env["TABSERVE_WORKERS"] == "1"
    assert env["TABSERVE_MODEL_PATH"] == BAKED


def test_the_final_stage_holds_the_serving_install_only(engine: Engine, image: str):
    probe = ("import importlib.util as u, json, os, pathlib, shutil, tabserve; "
             "root = pathlib.Path(tabserve.__file__).parent; "
             "print(json.dumps({'uid': os.getuid(), "
             "'sklearn': bool(u.find_spec('sklearn')), 'pandas': bool(u.find_spec('pandas')), "
             "'pip': bool(u.find_spec('pip')), 'gcc': shutil.which('gcc') or shutil.which('cc'), "
             "'sources': len(list(root.rglob('*.py'))), 'compiled': len(list(root.rglob('*.pyc')))}))")
    done = engine.run("run", "--rm", "--entrypoint", "python", image, "-c", probe)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["uid"] == 10001
    assert not facts["sklearn"] and not facts["pandas"] and not facts["pip"] and facts["gcc"] is None
    assert facts["compiled"] >= facts["sources"] > 10  # every module of tabserve compiled at build time


def test_the_baked_demo_model_answers_like_the_bundle_in_process_and_stops_on_sigterm(
        engine: Engine, image: str, container: list[str], tmp_path: Path):
    name, base = start(engine, container, "-e", "TABSERVE_SHUTDOWN_DELAY_S=0.5")
    engine.run("cp", f"{name}:{BAKED}", str(tmp_path / "demo"))
    expected = float(tabserve.load(tmp_path / "demo" / "1").predict([SEED_ROW])[0])
    body = predict(base)
    assert body["model_name"] == "demo" and body["model_version"] == "1"
    assert body["prediction"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    if engine.name == "podman":  # docker runs HEALTHCHECK on its own timer; podman's needs systemd
        assert engine.run("healthcheck", "run", name, check=False).returncode == 0
    logs = stop_cleanly(engine, name)
    provider = [json.loads(line) for line in logs.splitlines() if '"execution_provider"' in line]
    assert provider and provider[0]["provider"] == "CPUExecutionProvider"


def test_a_bundle_given_at_run_time_is_served_read_only_by_two_workers(
        engine: Engine, image: str, container: list[str], demo_bundle: Path, tmp_path: Path):
    # The pod's constraints: read-only root, no capabilities, writable scratch only where mounted.
    mounted = tmp_path / "bundle"
    shutil.copytree(demo_bundle, mounted)
    for path in [mounted, *mounted.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the container's uid 10001 reads it
    name, base = start(engine, container, "--read-only", "--cap-drop", "ALL",
                       "--security-opt", "no-new-privileges",
                       "-v", "/var/lib/tabserve",  # an anonymous volume, owned like the image's folder
                       "-v", f"{mounted}:/models/mine:ro", "-e", "MODEL_URI=/models/mine",
                       "-e", "TABSERVE_WORKERS=2")
    expected = float(tabserve.load(demo_bundle).predict([SEED_ROW])[0])
    for _ in range(4):  # both workers
        body = predict(base)
        assert body["prediction"] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    stop_cleanly(engine, name)


def test_without_a_model_the_container_exits_with_a_message_that_says_what_to_give(
        engine: Engine, image: str, container: list[str]):
    name = f"tabserve-test-{uuid.uuid4().hex[:8]}"
    container.append(name)
    engine.run("run", "--name", name, "-e", "MODEL_URI=/models/missing", image, check=False, timeout=120)
    state = engine.inspect("container", name)["State"]
    logs = engine.logs(name)
    assert state["ExitCode"] == 2, logs
    assert "/models/missing" in logs and "does not exist" in logs


def test_the_train_target_runs_tabserve_retrain(engine: Engine, image: str):
    # Built after the CPU image, whose model stage starts from the train stage: the layers are cached.
    engine.build(TRAIN_TAG, target="train")
    config = engine.inspect("image", TRAIN_TAG)["Config"]
    assert config["Entrypoint"] == ["tabserve"] and config["User"] == "10001:10001"
    done = engine.run("run", "--rm", TRAIN_TAG, "retrain", "--help")
    assert "--data" in done.stdout and "--min-improvement" in done.stdout, done.stdout
    # the training and registry libraries the CronJob's command needs are there
    done = engine.run("run", "--rm", "--entrypoint", "python", TRAIN_TAG, "-c",
                      "import sklearn, skl2onnx, pandas, mlflow, tabserve; print('ok')")
    assert done.stdout.strip().endswith("ok")
