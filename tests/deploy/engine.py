"""A container engine for the image tests: podman (rootful, as scripts/setup-podman.sh leaves it) or docker.

``find_engine()`` returns the engine, or the reason none is usable, which the tests give to ``pytest.skip``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"
TAG = "localhost/tabserve-test:cpu"  # the CPU image the container tests build (tests/deploy/conftest.py)
TRAIN_TAG = "localhost/tabserve-test:train"  # its train target
# Where scripts/setup-podman.sh writes podman's configuration (runc, ulimits this VM allows).
SETUP_CONF = Path(os.environ.get("WORK", "/tmp/ctr")) / "containers.conf"


@dataclass
class Engine:
    name: str  # "podman" or "docker"
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            command = f"{self.name} {' '.join(args)}"
            raise AssertionError(f"{command} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def build(self, tag: str, dockerfile: str = "Dockerfile", *build_args: str, target: str | None = None,
              timeout: float = 900) -> None:
        fmt = ["--format", "docker"] if self.name == "podman" else []  # OCI images drop HEALTHCHECK
        args = [a for kv in build_args for a in ("--build-arg", kv)]
        if target:
            args += ["--target", target]
        self.run("build", *fmt, *args, "-t", tag, "-f", str(ROOT / dockerfile), str(ROOT), timeout=timeout)

    def inspect(self, kind: str, ref: str) -> dict:
        return json.loads(self.run(kind, "inspect", ref).stdout)[0]

    def logs(self, name: str) -> str:
        done = self.run("logs", name, check=False)
        return done.stdout + done.stderr

    def remove(self, name: str) -> None:
        self.run("rm", "-f", "-v", name, check=False, timeout=60)  # -v: its anonymous volumes too


def find_engine() -> Engine | str:
    """A usable engine, else why not (for the skip message)."""
    reasons = []
    for name in ("podman", "docker"):
        if shutil.which(name) is None:
            reasons.append(f"no {name} on PATH")
            continue
        engine = Engine(name)
        if name == "podman" and "CONTAINERS_CONF" not in engine.env and SETUP_CONF.is_file():
            engine.env["CONTAINERS_CONF"] = str(SETUP_CONF)
        info = engine.run("info", check=False, timeout=60)
        if info.returncode != 0:
            reasons.append(f"`{name} info` failed: {(info.stderr or info.stdout).strip()[:200]}")
            continue
        if engine.run("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
            pulled = engine.run("pull", BASE_IMAGE, check=False, timeout=180)
            if pulled.returncode != 0:
                reasons.append(f"{name} has no {BASE_IMAGE} base image and cannot pull it (no registry?); "
                               "scripts/setup-podman.sh builds a local one")
                continue
        return engine
    return "no usable container engine: " + "; ".join(reasons)


def wait_ready(base: str, engine: Engine, name: str, timeout: float = 120, in_a_row: int = 8) -> None:
    """Ready ``in_a_row`` times on fresh connections: with several workers, one may answer while another
    still loads."""
    deadline, ready = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            ready = ready + 1 if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            ready = 0
        if ready >= in_a_row:
            return
        if ready:
            continue
        state = engine.inspect("container", name)["State"]
        if not state.get("Running", False):
            raise AssertionError(f"container {name} exited {state.get('ExitCode')}:\n{engine.logs(name)}")
        time.sleep(0.3)
    raise AssertionError(f"container {name} not ready within {timeout} s:\n{engine.logs(name)}")
