"""v1: one row may be sent as a record; single-row and batch responses carry a classifier's probabilities in the
same shape (``classes``, and ``{class: probability}`` per row); the seed's fields are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

ROW = [5.9, 3.0, 5.1, 1.8]


def record(model, values=ROW):
    return dict(zip(model.schema.names, values, strict=True))


@pytest.fixture
def iris(make_client, iris_model):
    with make_client(iris_model) as c:
        yield c


def test_one_row_as_a_record_answers_like_data(iris, iris_model):
    seed = iris.post("/api/v1/predict", json={"data": ROW}).json()
    rec = record(iris_model)
    shuffled = dict(reversed(list(rec.items())))
    for body in ({"record": rec}, {"records": [rec]}, {"record": shuffled}):
        got = iris.post("/api/v1/predict", json=body)
        assert got.status_code == 200, got.text
        got = got.json()
        assert got["prediction"] == seed["prediction"] and got["probabilities"] == seed["probabilities"], body


@pytest.mark.parametrize(("body", "words"), [
    ({"records": [{}, {}]}, "this endpoint takes one row: send batches to /predict/batch"),
    ({"record": {"sepal_length": 1.0}}, "missing feature(s) 'sepal_width'"),
    ({"data": ROW, "record": {}}, "send one of 'data', 'record' or 'records'"),
    ({"rows": [ROW]}, "missing field 'data'"),
])
def test_a_wrong_record_is_refused_naming_the_problem(iris, body, words):
    r = iris.post("/api/v1/predict", json=body)
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_single_and_batch_give_probabilities_in_the_same_shape(iris, iris_model):
    rows = [ROW, [5.1, 3.5, 1.4, 0.2]]
    batch = iris.post("/api/v1/predict/batch", json={"data": rows}).json()
    singles = [iris.post("/api/v1/predict", json={"data": r}).json() for r in rows]
    classes = ["setosa", "versicolor", "virginica"]
    assert batch["classes"] == classes and all(s["classes"] == classes for s in singles)
    assert batch["probabilities_by_class"] == [s["probabilities"] for s in singles]
    # the seed's fields as they were: the batch's matrix in class order, the single row's dict
    np.testing.assert_array_equal(batch["probabilities"], [[s["probabilities"][c] for c in classes]
                                                           for s in singles])
    np.testing.assert_array_equal(batch["probabilities"], iris_model.predict_proba(np.array(rows)))
    assert batch["predictions"] == [s["prediction"] for s in singles]


def test_a_regressor_still_answers_the_seed_fields_only(client):
    single = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}).json()
    assert set(single) == {"prediction", "latency_ms", "total_time_ms", "model_format", "features_count",
                           "model_name", "model_version"}
    batch = client.post("/api/v1/predict/batch", json={"data": [[0.1, 0.2, 0.3, 0.4, 0.5]]}).json()
    assert "probabilities_by_class" not in batch and "classes" not in batch
