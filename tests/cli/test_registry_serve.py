"""`tabserve serve models:/...` with a typo stops at once with the registry's answer (exit 2) instead of starting
a server that stays unready for ever, and asks no empty embedded registry into existence."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.servers import free_port, tabserve_cmd

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # starts `tabserve serve` processes

WATCHDOG_S = 120  # a server that starts instead of refusing would run until this kills it


def serve(uri: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("TABSERVE_")}
    return subprocess.run(tabserve_cmd("serve", uri, "--home", str(home), "--port", str(free_port())),
                          env={**base, **env}, capture_output=True, text=True, timeout=WATCHDOG_S, check=False)


def test_a_model_never_registered_in_the_embedded_registry_stops_serve_and_creates_no_database(tmp_path: Path):
    done = serve("models:/nope@x", tmp_path / "home")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "there is no model 'nope'" in done.stderr and "MLFLOW_TRACKING_URI" in done.stderr
    assert not (tmp_path / "home" / "mlflow" / "mlflow.db").exists()
    assert "Uvicorn running" not in done.stderr


def test_an_alias_typo_stops_serve_with_the_aliases_that_exist(tmp_path: Path, demo_bundle: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    from tabserve.training.publish import register_bundle

    home = tmp_path / "home"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register_bundle(demo_bundle, "houses", alias="champion", home=home)
    done = serve("models:/houses@champoin", home)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "has no alias 'champoin'" in done.stderr and "champion" in done.stderr
    version_typo = serve("models:/houses/7", home)
    assert version_typo.returncode == 2 and "has no version 7" in version_typo.stderr, version_typo.stderr
