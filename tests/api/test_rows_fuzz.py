"""Row-shaped requests, valid or nearly so, for each kind of model tabserve serves: a regressor, classifiers
with integer and with text classes, and a model with a text feature. Random bodies (test_schemathesis.py) seldom
form a whole row, so they never reach the encoders of a prediction; these do. Never a 5xx; a 200 carries a
prediction of the model's kind (a float, or one of its classes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tabserve
from tabserve.training import train_file

EXAMPLES = 150


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_model, iris_model) -> dict[str, tabserve.Model]:
    folder: Path = tmp_path_factory.mktemp("fuzz-models")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300),
                          "city": rng.choice(["lyon", "nice", "paris"], 300)})
    frame["label"] = (frame.a + (frame.city == "nice") > 0.5).astype(int)
    frame.to_csv(folder / "t.csv", index=False)
    labels = train_file(folder / "t.csv", "label", estimator="random_forest", name="ints", dest=folder / "ints",
                        params={"n_estimators": 5}, features=["a", "b"])
    text = train_file(folder / "t.csv", "label", estimator="linear", name="text", dest=folder / "text")
    return {"demo": demo_model, "iris": iris_model, "ints": tabserve.load(labels.path),
            "text": tabserve.load(text.path)}


VALUE = (st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-10**20, 10**20) | st.none()
         | st.booleans() | st.sampled_from(["lyon", "paris", "Paris", "", "1.5", "nan"]))


def _row(model: tabserve.Model) -> st.SearchStrategy[list[object]]:
    """Mostly values the feature takes (numbers, or its categories), one in ten any value; one row in ten has a
    value too many or too few."""
    cells = []
    for f in model.manifest.features:
        good = st.sampled_from(f.categories) if f.kind == "categorical" else (
            st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000))
        cells.append(st.integers(0, 9).flatmap(lambda i, good=good: VALUE if i == 5 else good))
    exact = st.tuples(*cells).map(list)
    return st.tuples(exact, st.sampled_from([0] * 8 + [-1, 1])).map(
        lambda r: r[0][:-1] if r[1] < 0 else [*r[0], 1.0] if r[1] > 0 else r[0])


@pytest.mark.parametrize("name", ["demo", "iris", "ints", "text"])
def test_rows_of_any_values_get_an_answer_or_a_4xx(make_client, models, name):
    model = models[name]
    width = len(model.manifest.features)
    names = [f.name for f in model.manifest.features]
    failures: list[str] = []
    answered: list[bool] = []
    with make_client(model) as client:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(rows=st.lists(_row(model), min_size=1, max_size=2),
               how=st.sampled_from(["single", "batch", "records", "v2"]))
        def run(rows: list[list[object]], how: str) -> None:
            if how == "single":
                r = client.post("/api/v1/predict", json={"data": rows[0]})
            elif how == "batch":
                r = client.post("/api/v1/predict/batch", json={"data": rows})
            elif how == "records":
                r = client.post("/api/v1/predict/batch",
                                json={"records": [dict(zip(names, row, strict=False)) for row in rows]})
            else:
                flat = [v for row in rows for v in row]
                r = client.post(f"/v2/models/{model.name}/infer", json={"inputs": [
                    {"name": "X", "shape": [len(rows), width], "datatype": "FP64", "data": flat}]})
            answered.append(r.status_code == 200)
            if r.status_code >= 500 or (r.status_code >= 400 and "detail" not in r.json()
                                        and "error" not in r.json()):
                failures.append(f"{how} {rows} -> {r.status_code}: {r.text[:200]}")
            elif r.status_code == 200 and how != "v2":
                body = r.json()
                predictions = [body["prediction"]] if how == "single" else body["predictions"]
                for p in predictions:
                    if model.classes:
                        ok = p in model.classes
                    else:
                        ok = isinstance(p, float) and math.isfinite(p)
                    if not ok:
                        failures.append(f"{how} {rows} -> prediction {p!r}")

        run()
    assert failures == []
    assert sum(answered) >= EXAMPLES // 5, sum(answered)  # the rows reach the model, not only the validation
