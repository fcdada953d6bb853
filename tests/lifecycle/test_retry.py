"""A version copied into a served model folder the slow way (``cp -r``, file by file) is refused while half
written and served by the first poll after the copy is complete; a broken manifest is logged once, not at
every poll."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from tabserve.serving.manager import ModelManager
from tests.lifecycle.conftest import ROWS, Versions, publish


@pytest.fixture
def manager():
    manager = ModelManager()
    yield manager
    manager.close()


def _failures(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "model_load_failed"]


def test_a_version_copied_in_two_steps_is_refused_then_served_once_complete(versions: Versions, tmp_path: Path,
                                                                           manager: ModelManager):
    folder = versions.model_dir(tmp_path, "1")
    manager.load(folder)
    target = folder / "2"
    target.mkdir()
    onnx = (versions.v2 / "model.onnx").read_bytes()
    # What `cp -r` leaves mid-way: the manifest, and the first half of the model.
    shutil.copy2(versions.v2 / "tabserve.json", target / "tabserve.json")
    (target / "model.onnx").write_bytes(onnx[:len(onnx) // 2])
    with capture_logs() as logs:
        for _ in range(3):
            manager.refresh()
    assert manager.current().version == "1"  # the half-written version never serves
    failure = manager.slot("demo").describe()["last_failure"]
    assert failure["version"] == "2"
    assert len(_failures(logs)) == 1  # refused once; the unchanged copy is not reloaded at every poll

    for path in versions.v2.iterdir():  # the copy completes
        if path.name not in ("tabserve.json", "model.onnx"):
            shutil.copy2(path, target / path.name)
    (target / "model.onnx").write_bytes(onnx)
    assert manager.refresh() == [("demo", "loaded", None)]
    assert manager.current().version == "2"
    assert "last_failure" not in manager.slot("demo").describe()
    np.testing.assert_allclose(manager.current().predict(np.array(ROWS)), versions.expected["2"])


def test_an_unchanged_broken_version_is_tried_again_after_its_backoff(versions: Versions, tmp_path: Path,
                                                                     manager: ModelManager):
    folder = versions.model_dir(tmp_path, "1")
    manager.load(folder)
    publish(versions, folder, "3")  # its model.onnx does not match its manifest, and stays so
    for _ in range(3):
        manager.refresh()
    slot = manager.slot("demo")
    first = slot.describe()["last_failure"]
    assert (first["version"], first["attempts"]) == ("3", 1)
    assert first["retry_at"] - first["at"] == pytest.approx(30)
    slot.last_failure = dataclasses.replace(slot.last_failure, at=first["at"] - 31)  # its retry time came
    assert manager.refresh() == [("demo", "failed", slot.last_failure.message)]
    second = slot.describe()["last_failure"]
    assert (second["version"], second["attempts"]) == ("3", 2)
    assert second["retry_at"] - second["at"] == pytest.approx(60)  # the wait doubles
    assert manager.current().version == "1"


def test_an_unreadable_manifest_is_logged_once_per_change(versions: Versions, tmp_path: Path,
                                                          manager: ModelManager):
    folder = versions.model_dir(tmp_path, "1")
    manager.load(folder)
    broken = folder / "2"
    shutil.copytree(versions.v2, broken)
    (broken / "tabserve.json").write_text('{"name": "demo", "version": ')
    with capture_logs() as logs:
        results = [manager.refresh() for _ in range(5)]
    assert [r[0][1] for r in results] == ["failed"] * 5  # each poll still reports it
    logged = _failures(logs)
    assert len(logged) == 1 and "tabserve.json cannot be read" in logged[0]["error"]
    assert manager.current().version == "1"

    (broken / "tabserve.json").write_text('{"name": "demo"')  # changed, still unreadable: said again, once
    with capture_logs() as logs:
        for _ in range(3):
            manager.refresh()
    assert len(_failures(logs)) == 1
    shutil.copy2(versions.v2 / "tabserve.json", broken / "tabserve.json")
    assert manager.refresh() == [("demo", "loaded", None)]
    assert manager.current().version == "2"
