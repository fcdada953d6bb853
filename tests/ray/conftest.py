"""One local Ray instance for the Ray tests (it takes seconds to start and ~1 GB of memory): started by the first
test that needs it, stopped as soon as the next test is not a Ray test, so the rest of the suite runs without."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def ray_address() -> str:
    """The instance's address: other processes (the CLI under test) join it through $RAY_ADDRESS."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    return ray.get_runtime_context().gcs_address


@pytest.hookimpl(trylast=True)  # after the fixtures' own teardown (a Serve app is shut down first)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        ray.shutdown()  # a no-op when no Ray test started it


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects (scripts/test.sh)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)  # each starts or joins a local Ray cluster (~1 GB, seconds)
