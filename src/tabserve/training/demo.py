"""The demo model: tabserve's original random forest on synthetic regression data, deterministic."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.manifest import Feature
from tabserve.training.data import Dataset
from tabserve.training.tables import fingerprint
from tabserve.training.target import Target

N_SAMPLES = 2000
N_FEATURES = 5
SEED = 42
SOURCE = f"make_regression(n_samples={N_SAMPLES}, n_features={N_FEATURES}, noise=0.1, random_state={SEED})"


def demo_dataset() -> Dataset:
    """Features ``feature_0..feature_4`` ~ N(0, 1), target ``target``."""
    X, y = make_regression(n_samples=N_SAMPLES, n_features=N_FEATURES, noise=0.1, random_state=SEED)
    names = [f"feature_{i}" for i in range(N_FEATURES)]
    return Dataset(
        X=pd.DataFrame(X, columns=names),
        target=Target(name="target", dtype=str(y.dtype), task="regression",
                      reason="the demo model is a regressor", values=y, classes=None),
        specs=[Feature(name=n, dtype=str(X.dtype)) for n in names],
        source=SOURCE,
        fingerprint=fingerprint(X.tobytes(), y.tobytes()),
        columns=N_FEATURES + 1,
    )


def demo_pipeline() -> Pipeline:
    return Pipeline([
        ("scaler", StandardScaler()),
        ("model", RandomForestRegressor(n_estimators=100, max_depth=10, random_state=SEED, n_jobs=-1)),
    ])
