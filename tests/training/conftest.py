"""Fixtures for the training tests: real scikit-learn datasets written as CSV/Parquet, one demo bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from tabserve.cli import main
from tabserve.training import train_demo


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """diabetes.csv (regression), breast_cancer.parquet (binary 0/1), iris.csv (species names)."""
    folder = tmp_path_factory.mktemp("data")
    load_diabetes(as_frame=True).frame.to_csv(folder / "diabetes.csv", index=False)
    load_breast_cancer(as_frame=True).frame.to_parquet(folder / "breast_cancer.parquet", index=False)
    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame["species"] = np.asarray(iris.target_names)[iris.target]
    frame.to_csv(folder / "iris.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    train_demo(home=home)
    return home


@pytest.fixture(scope="session")
def demo_bundle(demo_home: Path) -> Path:
    return demo_home / "models" / "demo" / "1"


@pytest.fixture
def small_frame() -> pd.DataFrame:
    """40 rows: numeric features a, b; float target y; string label (two classes)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(size=40)
    return pd.DataFrame({"a": a, "b": b, "y": 3 * a - b + rng.normal(scale=0.1, size=40),
                         "label": np.where(a > 0, "yes", "no")})


@pytest.fixture
def cli() -> Callable[..., int]:
    """``tabserve.cli.main`` as the console script runs it; arguments may be paths."""
    return lambda *argv: main([str(a) for a in argv])
