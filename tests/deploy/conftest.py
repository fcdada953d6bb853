"""The container engine and the CPU image, found and built once per session for every container test
(tests/deploy/test_image.py, test_kube_play.py): the build is the slow part (minutes on 2 cores)."""

from __future__ import annotations

import pytest

from tests.deploy.engine import TAG, Engine, find_engine


@pytest.fixture(scope="session")
def engine() -> Engine:
    found = find_engine()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    engine.build(TAG)
    return TAG
