from __future__ import annotations

import asyncio

import pytest

from tabserve.core.runtime import RuntimeOptions
from tabserve.serving import preload
from tabserve.serving.manager import ModelManager


def test_a_preloaded_model_is_taken_once_and_served(demo_bundle):
    preload.start(demo_bundle, RuntimeOptions())
    manager = ModelManager()
    asyncio.run(manager.load_in_background(str(demo_bundle)))
    assert manager.state == "ready" and manager.model.name == "demo"
    assert manager.model.load_seconds > 0
    assert preload.take(demo_bundle) is None  # consumed
    manager.close()


def test_a_failed_preload_is_a_failed_load(tmp_path):
    missing = tmp_path / "nothing"
    preload.start(missing, RuntimeOptions())
    manager = ModelManager()
    asyncio.run(manager.load_in_background(str(missing)))
    assert manager.state == "failed" and "does not exist" in manager.last_failure.message
    with pytest.raises(Exception, match="does not exist"):
        manager.current()
    manager.close()
