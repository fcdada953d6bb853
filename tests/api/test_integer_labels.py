"""A classifier whose classes are integers (the common 0/1 target) through every prediction endpoint: its
labels come out of onnxruntime as numpy.longlong, which orjson does not serialize by itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

import tabserve
from tabserve.training import train_file


@pytest.fixture(scope="module", params=["linear", "random_forest"])
def int_label_model(request, tmp_path_factory) -> tabserve.Model:
    folder: Path = tmp_path_factory.mktemp(f"int-labels-{request.param}")
    x, y = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0, random_state=0)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(churned=y)
    frame.to_csv(folder / "churn.csv", index=False)
    bundle = train_file(folder / "churn.csv", "churned", estimator=request.param, name="churn", dest=folder / "b")
    return tabserve.load(bundle.path)


ROWS = [[0.5, -1.0, 0.3, 2.0], [-2.0, 1.5, -0.7, 0.1], [1.0, 1.0, 1.0, 1.0]]


def test_integer_labels_through_every_endpoint(make_client, int_label_model):
    model = int_label_model
    expected = model.predict(np.array(ROWS)).tolist()
    assert model.classes == [0, 1] and set(expected) <= {0, 1}
    with make_client(model) as c:
        for row, label in zip(ROWS, expected, strict=True):
            r = c.post("/api/v1/predict", json={"data": row})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["prediction"] == label and isinstance(body["prediction"], int)
            assert set(body["probabilities"]) == {"0", "1"}
        r = c.post("/api/v1/predict/batch", json={"data": ROWS})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected and r.json()["classes"] == [0, 1]
        records = [dict(zip("abcd", row, strict=True)) for row in ROWS]
        r = c.post("/api/v1/predict/batch", json={"records": records})
        assert r.status_code == 200 and r.json()["predictions"] == expected
        r = c.post("/v2/models/churn/infer", json={"inputs": [
            {"name": "X", "shape": [3, 4], "datatype": "FP64", "data": [v for row in ROWS for v in row]}]})
        assert r.status_code == 200, r.text
        label = next(o for o in r.json()["outputs"] if o["name"] == "label")
        assert label["data"] == expected
        r = c.post("/api/v1/explain", json={"data": ROWS[0]})
        assert r.status_code == 200, r.text
