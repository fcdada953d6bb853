from __future__ import annotations

import json

import numpy as np
import pytest

from tests.api.conftest import ORIGINAL_ROW


def expected(model, rows):
    return model.predict(np.array(rows, dtype=np.float32))


def test_original_example_returns_the_seed_fields(client, demo_model):
    r = client.post("/api/v1/predict", json={"data": ORIGINAL_ROW})
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"prediction", "latency_ms", "total_time_ms", "model_format", "features_count",
                         "model_name", "model_version"}
    assert body["prediction"] == pytest.approx(float(expected(demo_model, [ORIGINAL_ROW])[0]), rel=1e-6)
    assert body["model_format"] == "onnx"
    assert body["features_count"] == 5
    assert body["model_name"] == "demo"
    assert 0 < body["latency_ms"] <= body["total_time_ms"]
    assert "warnings" not in body  # the original row is inside the training range


def test_request_id_is_echoed_or_generated(client):
    r = client.post("/api/v1/predict", json={"data": ORIGINAL_ROW}, headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    # a header that could forge log lines is replaced, not echoed
    assert client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"] != "a b\tc"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"data": [0.1, 0.2, 0.3, 0.4]}, "got 4 values but the model expects 5 features"),
        ({"data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, "got 6 values"),
        ({"data": [0.1, 0.2, "abc", 0.4, 0.5]}, "feature 'feature_2' (column 2): 'abc' is a string"),
        ({"data": [0.1, None, 0.3, 0.4, 0.5]}, "feature 'feature_1' (column 1): the value is null"),
        ({"data": [0.1, 0.2, 0.3, [0.4], 0.5]}, "feature 'feature_3' (column 3)"),
        ({"data": [0.1, 0.2, 0.3, 0.4, 10**400]}, "number is infinity when parsed as double"),
        ({"data": "0.1,0.2"}, "'data' must be a list of 5 values"),
        ({"data": []}, "got 0 values"),
        ({"rows": [ORIGINAL_ROW]}, "missing field 'data'"),
        ([0.1, 0.2], "must be a JSON object"),
    ],
)
def test_bad_single_rows_get_a_422_naming_the_problem(client, payload, fragment):
    r = client.post("/api/v1/predict", json=payload)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert r.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"data": [NaN, 0.2, 0.3, 0.4, 0.5]}', "NaN and Infinity are not valid JSON"),
        (b'{"data": [Infinity, 0.2, 0.3, 0.4, 0.5]}', "NaN and Infinity are not valid JSON"),
        (b'{"data": [1e400, 0.2, 0.3, 0.4, 0.5]}', "not valid JSON"),
        (b'{"data": [0.1, 0.2', "not valid JSON"),
        (b"", "the request body is empty"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_get_a_422(client, raw, fragment):
    r = client.post("/api/v1/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_feature_error_names_the_feature_in_a_field(client):
    r = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, "x"]})
    assert r.json()["feature"] == "feature_4"


def test_booleans_are_read_as_one_and_zero(client, demo_model):
    r = client.post("/api/v1/predict", json={"data": [True, False, 0.3, 0.4, 0.5]})
    assert r.status_code == 200
    assert r.json()["prediction"] == pytest.approx(float(expected(demo_model, [[1, 0, 0.3, 0.4, 0.5]])[0]))


def test_batch_rows_come_back_in_order(client, demo_model):
    rows = np.random.default_rng(1).normal(size=(50, 5)).round(4).tolist()
    r = client.post("/api/v1/predict/batch", json={"data": rows})
    assert r.status_code == 200
    body = r.json()
    assert body["rows"] == 50
    np.testing.assert_allclose(body["predictions"], expected(demo_model, rows), rtol=1e-6)
    assert body["model_format"] == "onnx" and body["features_count"] == 5


def test_named_records_in_any_key_order_match_positional_rows(client):
    rows = [[0.1, 0.2, 0.3, 0.4, 0.5], [-1.0, 0.5, 1.5, 0.0, 0.25]]
    names = [f"feature_{i}" for i in range(5)]
    records = [dict(reversed(list(zip(names, row, strict=True)))) for row in rows]
    by_name = client.post("/api/v1/predict/batch", json={"records": records}).json()["predictions"]
    by_position = client.post("/api/v1/predict/batch", json={"data": rows}).json()["predictions"]
    assert by_name == by_position


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"data": []}, "'data' is empty"),
        ({"records": []}, "'records' is empty"),
        ({"data": [[0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2]]}, "row 1: got 2 values"),
        ({"data": [[0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, None, 0.4, 0.5]]}, "row 1, feature 'feature_2'"),
        ({"data": [[0.1, 0.2, 0.3, 0.4, 0.5], 7]}, "row 1: a row must be a list"),
        ({"records": [{"feature_0": 1, "feature_1": 2, "feature_2": 3, "feature_3": 4}]},
         "missing feature(s) 'feature_4'"),
        ({"records": [{f"feature_{i}": 1 for i in range(5)} | {"age": 3}]}, "unknown feature(s) 'age'"),
        ({"records": [[1, 2, 3, 4, 5]]}, "row 0: each record must be an object"),
        ({"data": [ORIGINAL_ROW], "records": []}, "send exactly one of 'data'"),
        ({}, "send exactly one of 'data'"),
    ],
)
def test_bad_batches_get_a_422_naming_row_and_feature(client, payload, fragment):
    r = client.post("/api/v1/predict/batch", json=payload)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_too_many_rows_names_the_limit(make_client, demo_model):
    with make_client(demo_model, max_batch_rows=3) as c:
        r = c.post("/api/v1/predict/batch", json={"data": [ORIGINAL_ROW] * 4})
        assert r.status_code == 422
        assert r.json()["limit"] == 3 and "limit is 3 rows" in r.json()["detail"]
        assert c.post("/api/v1/predict/batch", json={"data": [ORIGINAL_ROW] * 3}).status_code == 200


def test_default_row_limit_is_ten_thousand(client):
    r = client.post("/api/v1/predict/batch", json={"data": [ORIGINAL_ROW] * 10_001})
    assert r.status_code == 422 and r.json()["limit"] == 10_000
    assert client.post("/api/v1/predict/batch", json={"data": [ORIGINAL_ROW] * 10_000}).status_code == 200


def test_body_over_the_limit_is_refused_with_413(make_client, demo_model):
    with make_client(demo_model, max_body_bytes=2048) as c:
        big = json.dumps({"data": [ORIGINAL_ROW] * 200}).encode()
        r = c.post("/api/v1/predict/batch", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert "limit is 2048 bytes" in r.json()["detail"]

        def chunked():  # no Content-Length: the body is counted as it arrives
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        r = c.post("/api/v1/predict/batch", content=chunked(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/api/v1/predict", json={"data": ORIGINAL_ROW}).status_code == 200


def test_large_batches_scored_off_the_loop_give_the_same_answer(make_client, demo_model):
    rows = np.random.default_rng(2).normal(size=(2000, 5)).tolist()
    with make_client(demo_model, inline_max_bytes=0) as threaded, make_client(demo_model) as inline:
        a = threaded.post("/api/v1/predict/batch", json={"data": rows}).json()["predictions"]
        b = inline.post("/api/v1/predict/batch", json={"data": rows[:10]}).json()["predictions"]
    assert a[:10] == b
    np.testing.assert_allclose(a, expected(demo_model, rows), rtol=1e-6)


def test_range_policy_warn_names_the_feature(client):
    body = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 50.0]}).json()
    assert len(body["warnings"]) == 1
    assert "feature 'feature_4' (column 4): value 50 is above the training maximum" in body["warnings"][0]
    batch = client.post("/api/v1/predict/batch", json={"data": [ORIGINAL_ROW, [-60, 0, 0, 0, 0]]}).json()
    assert batch["warnings"][0].startswith("row 1, feature 'feature_0' (column 0): value -60 is below")


def test_range_policy_reject_and_off(make_client, demo_model):
    with make_client(demo_model, range_policy="reject") as c:
        r = c.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 50.0]})
        assert r.status_code == 422 and r.json()["feature"] == "feature_4"
        assert c.post("/api/v1/predict", json={"data": ORIGINAL_ROW}).status_code == 200
    with make_client(demo_model, range_policy="off") as c:
        assert "warnings" not in c.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 50.0]}).json()


def test_classification_returns_label_and_probabilities(make_client, iris_model):
    row = [5.1, 3.5, 1.4, 0.2]
    with make_client(iris_model) as c:
        body = c.post("/api/v1/predict", json={"data": row}).json()
        assert body["prediction"] == "setosa"
        assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert body["probabilities"]["setosa"] == max(body["probabilities"].values())
        batch = c.post("/api/v1/predict/batch", json={"data": [row, [6.7, 3.0, 5.2, 2.3]]}).json()
    assert batch["predictions"] == ["setosa", "virginica"]
    assert batch["classes"] == ["setosa", "versicolor", "virginica"]
    np.testing.assert_allclose(batch["probabilities"], iris_model.predict_proba(np.array(
        [row, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)), atol=1e-6)


def test_training_extremes_are_inside_the_range(make_client, demo_model):
    stats = [f.stats for f in demo_model.manifest.features]
    with make_client(demo_model, range_policy="reject") as c:
        for row in ([s.max for s in stats], [s.min for s in stats]):
            r = c.post("/api/v1/predict", json={"data": row})
            assert r.status_code == 200, r.text
