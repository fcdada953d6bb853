"""Several versions of one model in a model folder: v1 a random forest, v2 a linear model (other answers),
and a broken copy ready to be published as v3."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

import tabserve

ROWS = [[0.1, 0.2, 0.3, 0.4, 0.5], [-1.0, 0.5, 2.0, -0.3, 0.0], [1.5, -2.0, 0.7, 0.9, -1.1]]


@dataclass(frozen=True)
class Versions:
    v1: Path
    v2: Path
    broken: Path
    expected: dict[str, np.ndarray]  # version -> predictions of ROWS

    def model_dir(self, root: Path, *versions: str) -> Path:
        """A fresh model folder holding the named versions ("1", "2", "broken" as "3")."""
        folder = root / "demo"
        folder.mkdir(parents=True)
        for v in versions:
            publish(self, folder, v)
        return folder


def publish(versions: Versions, folder: Path, version: str) -> Path:
    """Copy a prepared version into ``folder`` atomically (staged under a hidden name, then renamed)."""
    src = {"1": versions.v1, "2": versions.v2, "3": versions.broken}[version]
    staging = folder / f".staging-{version}"
    shutil.copytree(src, staging)
    return staging.rename(folder / version)


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Versions:
    from tabserve.training import train_file
    from tabserve.training.demo import demo_dataset

    root = tmp_path_factory.mktemp("versions")
    data = demo_dataset()
    frame = data.X.copy()
    frame["target"] = data.target.values
    csv = root / "demo.csv"
    frame.to_csv(csv, index=False)
    v2 = train_file(csv, "target", estimator="linear", name="demo", dest=root / "prepared" / "2").path
    v1 = root / "prepared" / "1"
    shutil.copytree(demo_bundle, v1)
    broken = root / "prepared" / "3"
    shutil.copytree(v2, broken)
    manifest = json.loads((broken / "tabserve.json").read_text())
    (broken / "tabserve.json").write_text(json.dumps({**manifest, "version": "3"}))
    onnx = broken / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-16] + b"\0" * 16)  # the manifest's sha256 no longer matches
    expected = {"1": tabserve.load(v1).predict(np.array(ROWS)), "2": tabserve.load(v2).predict(np.array(ROWS))}
    assert not np.allclose(expected["1"], expected["2"])  # the test tells versions apart by their answers
    return Versions(v1, v2, broken, expected)


async def wait_for_model(client: httpx.AsyncClient, name: str, check, timeout: float = 30) -> dict:
    """Poll ``GET /api/v1/models/NAME`` until ``check(info)`` holds (a swap or a refused version showed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = (await client.get(f"/api/v1/models/{name}")).json()
        if check(info):
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s: {info.get('version')}, {info.get('serving')}")
