"""Joining a Ray cluster, or starting a local Ray instance for one command."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Join ``address`` (a cluster), or start a local Ray instance for this job; stop what was started."""
    if ray.is_initialized():
        yield
        return
    print(f"tabserve: {'connecting to Ray at ' + address if address else 'starting a local Ray instance'}",
          file=sys.stderr)
    ray.init(**ray_init_options(address), log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def ray_init_options(address: str | None) -> dict[str, Any]:
    """A new local instance gets no dashboard (it would only cost memory); joining a cluster (``address`` or
    $RAY_ADDRESS) takes its settings as they are."""
    if address or os.environ.get("RAY_ADDRESS"):
        return {"address": address, "configure_logging": False}
    return {"include_dashboard": False, "configure_logging": False}
