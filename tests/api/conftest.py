from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

import tabserve

ORIGINAL_ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


@pytest.fixture
def make_client() -> Callable[..., Any]:
    """A TestClient on a fresh app serving ``model`` with the given settings."""

    @contextmanager
    def make(model: tabserve.Model | None = None, **settings: Any) -> Iterator[TestClient]:
        settings.setdefault("access_log", False)
        app = tabserve.create_app(tabserve.Settings(**settings), model=model)
        with TestClient(app) as client:
            yield client

    return make


@pytest.fixture
def client(make_client: Callable[..., Any], demo_model: tabserve.Model) -> Iterator[TestClient]:
    with make_client(demo_model) as c:
        yield c
