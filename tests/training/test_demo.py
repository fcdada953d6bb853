"""The demo model: the original random forest, deterministic, loadable, in range for the sample request."""

from __future__ import annotations

import hashlib

import numpy as np

import tabserve
from tabserve.training import train_demo
from tabserve.training.data import split
from tabserve.training.demo import demo_dataset, demo_pipeline

SAMPLE = [[0.1, 0.2, 0.3, 0.4, 0.5]]


def test_demo_bundle_predicts_as_sklearn(demo_bundle):
    model = tabserve.load(demo_bundle)
    data = demo_dataset()
    parts = split(data, 0.2, 42)
    pipeline = demo_pipeline().fit(parts.X_train.to_numpy(), parts.y_train)
    np.testing.assert_allclose(model.predict(SAMPLE), pipeline.predict(np.array(SAMPLE)), rtol=1e-9, atol=0)
    assert (model.name, model.version, model.manifest.task) == ("demo", "1", "regression")


def test_demo_manifest(demo_bundle):
    m = tabserve.read_bundle(demo_bundle).manifest
    assert m.feature_names == [f"feature_{i}" for i in range(5)]
    assert m.input.model_dump() == {"name": "X", "dtype": "float64", "shape": [None, 5]}
    assert all(f.stats is not None and f.stats.count == 1600 for f in m.features)
    assert m.target is not None and m.target.name == "target"
    assert m.parity is not None and m.parity.passed and m.parity.rows_checked == 400 + m.parity.adversarial_rows
    assert m.parity.checked_on == "holdout+adversarial" and m.parity.adversarial_rows == 2000
    assert m.metrics["r2"] > 0.9
    params = m.training["params"]
    assert (params["n_estimators"], params["max_depth"], params["random_state"]) == (100, 10, 42)
    assert m.lineage.data["rows"] == 2000 and m.lineage.data["fingerprint"].startswith("sha256:")
    assert m.lineage.libraries["scikit-learn"]


def test_sample_request_is_within_training_ranges(demo_bundle):
    model = tabserve.load(demo_bundle)
    assert model.schema.check_ranges(np.array(SAMPLE), "reject", single=True) == []


def test_demo_is_deterministic_and_versioned(demo_home, demo_bundle):
    again = train_demo(home=demo_home)
    assert again == demo_home / "models" / "demo" / "2"
    first, second = ((p / "model.onnx").read_bytes() for p in (demo_bundle, again))
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
