"""Small real bundles, built once per test session with the real training path."""

from __future__ import annotations

from pathlib import Path

import pytest

import tabserve


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def demo_bundle(bundles_dir: Path) -> Path:
    from tabserve.training import train_demo

    return train_demo(dest=bundles_dir / "demo")


@pytest.fixture(scope="session")
def iris_bundle(bundles_dir: Path) -> Path:
    """Multiclass with string labels (species names)."""
    from sklearn.datasets import load_iris

    from tabserve.training import train_file

    frame = load_iris(as_frame=True).frame
    frame["species"] = [["setosa", "versicolor", "virginica"][int(t)] for t in frame.pop("target")]
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    csv = bundles_dir / "iris.csv"
    frame.to_csv(csv, index=False)
    return train_file(csv, "species", dest=bundles_dir / "iris").path


@pytest.fixture(scope="session")
def demo_model(demo_bundle: Path) -> tabserve.Model:
    return tabserve.load(demo_bundle)


@pytest.fixture(scope="session")
def iris_model(iris_bundle: Path) -> tabserve.Model:
    return tabserve.load(iris_bundle)
