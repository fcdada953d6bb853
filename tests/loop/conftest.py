"""A model with text features (besides the session's demo regressor and iris classifier), and payload records
made by scoring real rows, as the data plane makes them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tabserve
from tabserve.observability.payload import PayloadRecord


@pytest.fixture(scope="session")
def colors_bundle(bundles_dir: Path) -> Path:
    """Binary classifier (labels "no"/"yes") on one numeric and one text feature that takes missing values."""
    from tabserve.training import train_file

    rng = np.random.default_rng(3)
    n = 300
    color = rng.choice(["red", "green", "blue"], n)
    size = rng.normal(size=n)
    buy = np.where((color == "red") ^ (size > 0.3), "yes", "no")
    csv = bundles_dir / "colors.csv"
    frame = pd.DataFrame({"size": size, "color": color, "buy": buy})
    frame.loc[::10, "color"] = None  # an empty field: the model learns to take a missing color
    frame.to_csv(csv, index=False)
    return train_file(csv, "buy", name="colors", dest=bundles_dir / "colors").path


@pytest.fixture(scope="session")
def colors_model(colors_bundle: Path) -> tabserve.Model:
    return tabserve.load(colors_bundle)


def record(model: tabserve.Model, rows: list[list], request_id: str, variant: str | None = None,
           protocol: str = "v1", when: float | None = None) -> PayloadRecord:
    x = model.schema.rows(rows, max_rows=len(rows))
    return PayloadRecord(request_id, model, variant, time.time() if when is None else when, x, model.run(x),
                         protocol)
