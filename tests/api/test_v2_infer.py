"""Open Inference Protocol v2 inference over HTTP (in-process): JSON and binary tensors, errors."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest

from tabserve.protocol.tensors import datatype_for
from tests.api.conftest import ORIGINAL_ROW

ROWS = [ORIGINAL_ROW, [1.0, -0.5, 0.0, 2.0, 0.3], [0.0, 0.0, 0.0, 0.0, 0.0]]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
URL = "/v2/models/demo/infer"
BINARY_HEADER = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32",
                                          "parameters": {"binary_data_size": 20}}]})


def matrix(rows, name="X", datatype="FP32"):
    return {"name": name, "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": rows}


def binary_request(inputs, arrays, headers=None, **fields):
    """A body with the JSON header then the raw arrays, as tritonclient sends it, and its headers."""
    raws = [a.tobytes() for a in arrays]
    for spec, raw in zip(inputs, raws, strict=True):
        spec.setdefault("parameters", {})["binary_data_size"] = len(raw)
    header = orjson.dumps({"inputs": inputs, **fields})
    return {"content": header + b"".join(raws),
            "headers": {"Inference-Header-Content-Length": str(len(header)), **(headers or {})}}


def output_of(model, rows):
    """The name, datatype, shape and dtype that the model's first output has for ``rows`` rows."""
    spec = model.manifest.outputs[0]
    return spec.name, datatype_for(spec.dtype), [rows if d is None else d for d in spec.shape], spec.dtype


def split_response(r):
    size = int(r.headers["inference-header-content-length"])
    return orjson.loads(r.content[:size]), r.content[size:]


def test_a_json_matrix_scores_like_predict(client, demo_model):
    r = client.post(URL, json={"id": "req-1", "inputs": [matrix(ROWS)]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["model_name"] == "demo" and body["model_version"] == demo_model.version and body["id"] == "req-1"
    (out,) = body["outputs"]
    name, datatype, shape, dtype = output_of(demo_model, 3)
    assert (out["name"], out["datatype"], out["shape"]) == (name, datatype, shape)
    np.testing.assert_array_equal(np.array(out["data"], dtype=dtype), demo_model.predict(np.array(ROWS)))


def test_one_tensor_per_feature_and_the_versioned_url(client, demo_model):
    inputs = [{"name": f"feature_{j}", "shape": [3], "datatype": "FP64", "data": [r[j] for r in ROWS]}
              for j in range(5)]
    r = client.post(f"/v2/models/demo/versions/{demo_model.version}/infer", json={"inputs": inputs[::-1]})
    assert r.status_code == 200, r.text
    assert "id" not in r.json()
    want = demo_model.predict(np.array(ROWS))
    np.testing.assert_array_equal(np.array(r.json()["outputs"][0]["data"], dtype=want.dtype), want)


def test_a_classifier_answers_labels_as_bytes_and_probabilities(make_client, iris_model):
    with make_client(iris_model) as c:
        body = c.post("/v2/models/iris/infer", json={"inputs": [matrix(IRIS_ROWS, datatype="FP64")]}).json()
        label, proba = body["outputs"]
        label_name, proba_name = (o.name for o in iris_model.manifest.outputs)
        want_proba = iris_model.predict_proba(np.array(IRIS_ROWS))
        assert label == {"name": label_name, "datatype": "BYTES", "shape": [3],
                         "data": iris_model.predict(np.array(IRIS_ROWS)).tolist()}
        assert (proba["name"], proba["shape"]) == (proba_name, [3, 3])
        assert proba["datatype"] == datatype_for(want_proba.dtype.name)
        np.testing.assert_array_equal(np.array(proba["data"], dtype=want_proba.dtype).reshape(3, 3), want_proba)
        only = c.post("/v2/models/iris/infer", json={"inputs": [matrix(IRIS_ROWS)],
                                                      "outputs": [{"name": proba_name}]}).json()
        assert [o["name"] for o in only["outputs"]] == [proba_name]
        request = binary_request([{"name": "X", "shape": [3, 4], "datatype": "FP32"}],
                                 [np.array(IRIS_ROWS, dtype="<f4")], parameters={"binary_data_output": True})
        r = c.post("/v2/models/iris/infer", **request)
    header, raw = split_response(r)
    label, proba = header["outputs"]
    label_size, proba_size = label["parameters"]["binary_data_size"], proba["parameters"]["binary_data_size"]
    want_proba = iris_model.predict_proba(np.array(IRIS_ROWS))
    assert proba_size == want_proba.nbytes and len(raw) == label_size + proba_size
    labels, pos = [], 0
    for _ in range(3):
        (n,) = struct.unpack_from("<I", raw, pos)
        labels.append(raw[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    assert labels == iris_model.predict(np.array(IRIS_ROWS)).tolist()
    np.testing.assert_array_equal(np.frombuffer(raw[label_size:], dtype=want_proba.dtype).reshape(3, 3),
                                  want_proba)


def test_binary_request_and_binary_response_round_trip(client, demo_model):
    x = np.array(ROWS, dtype="<f4")
    name, datatype, shape, _ = output_of(demo_model, 3)
    request = binary_request([{"name": "X", "shape": [3, 5], "datatype": "FP32"}], [x], id="bin",
                             outputs=[{"name": name, "parameters": {"binary_data": True}}])
    r = client.post(URL, **request)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    header, raw = split_response(r)
    assert header["id"] == "bin"
    want = demo_model.predict(x)
    assert header["outputs"] == [{"name": name, "datatype": datatype, "shape": shape,
                                  "parameters": {"binary_data_size": want.nbytes}}]
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=want.dtype), want)


def test_binary_per_feature_inputs_of_mixed_datatypes(client, demo_model):
    cols = [np.array([r[j] for r in ROWS], dtype=dt) for j, dt in enumerate(["<f4", "<f8", "<f2", "<f4", "<f8"])]
    inputs = [{"name": f"feature_{j}", "shape": [3], "datatype": ["FP32", "FP64", "FP16", "FP32", "FP64"][j]}
              for j in range(5)]
    r = client.post(URL, **binary_request(inputs, cols))
    assert r.status_code == 200, r.text
    want = demo_model.predict(np.stack([c.astype(demo_model.schema.dtype) for c in cols], axis=1))
    np.testing.assert_array_equal(np.array(r.json()["outputs"][0]["data"], dtype=want.dtype), want)


def test_compressed_request_bodies_are_accepted(client, demo_model):
    body = orjson.dumps({"inputs": [matrix(ROWS)]})
    want = client.post(URL, content=body).json()
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        r = client.post(URL, content=packed, headers={"Content-Encoding": encoding})
        assert r.status_code == 200 and r.json() == want
    r = client.post(URL, content=body, headers={"Content-Encoding": "br"})
    assert r.status_code == 400 and "unsupported Content-Encoding 'br'" in r.json()["error"]


def test_large_bodies_are_scored_off_the_event_loop_with_the_same_answer(make_client, demo_model):
    payload = {"inputs": [matrix(ROWS * 50)]}
    with make_client(demo_model, inline_max_bytes=0) as c:
        threaded = c.post(URL, json=payload).json()
    with make_client(demo_model) as c:
        assert c.post(URL, json=payload).json() == threaded


def test_values_outside_the_training_range_are_warned_in_parameters(client):
    body = client.post(URL, json={"inputs": [matrix([[0.1, 0.2, 0.3, 0.4, 9.0]])]}).json()
    assert body["parameters"] == {"warnings": "row 0, feature 'feature_4' (column 4): value 9 is above the "
                                              "training maximum 3.15206"}


def _feature_inputs(datatype="FP32", **override):
    inputs = [{"name": f"feature_{j}", "shape": [1], "datatype": datatype, "data": [ORIGINAL_ROW[j]]}
              for j in range(5)]
    for name, spec in override.items():
        inputs[int(name.removeprefix("feature_"))] = {"name": name, **spec}
    return inputs


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"inputs": [{"name": "X", "shape": [2, 5], "datatype": "FP32", "data": ORIGINAL_ROW}]},
     "input 'X': shape [2, 5] holds 10 elements but 'data' has 5"),
    ({"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FLOAT32", "data": ORIGINAL_ROW}]},
     "input 'X': unknown datatype 'FLOAT32'"),
    ({"inputs": [matrix([ORIGINAL_ROW[:4]])]},
     "input 'X' has shape [1, 4] but the model expects [rows, 5]: 5 features (feature_0"),
    ({"inputs": _feature_inputs()[:4] + [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}]},
     "unknown input(s) 'age' and missing feature input(s) 'feature_4'"),
    ({"inputs": _feature_inputs(feature_2={"shape": [1], "datatype": "BYTES", "data": ["high"]})},
     "input 'feature_2' is BYTES (strings) but feature 'feature_2' is numeric"),
    ({"inputs": [matrix([[0.1, "n/a", 0.3, 0.4, 0.5]])]},
     "row 0, feature 'feature_1' (column 1): 'n/a' is a string; a number is required"),
    ({"inputs": [matrix([ORIGINAL_ROW])], "outputs": [{"name": "nope"}]},
     "unknown output 'nope'; the model's outputs are: "),
    ({"inputs": [matrix([ORIGINAL_ROW] * 11)]}, "input 'X' has 11 rows; the limit is 10 rows per request"),
    ({"inputs": {"X": ORIGINAL_ROW}}, "the request has no 'inputs'"),
    ([1, 2], "the request body must be a JSON object"),
])
def test_bad_requests_are_400_naming_the_problem(make_client, demo_model, payload, fragment):
    with make_client(demo_model, max_batch_rows=10) as c:
        r = c.post(URL, json=payload)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]
    assert set(r.json()) == {"error"}


@pytest.mark.parametrize(("raw", "headers", "fragment"), [
    (b'{"inputs": [', {}, "the request body is not valid JSON"),
    (b'{"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": [NaN, 0, 0, 0, 0]}]}', {},
     "NaN and Infinity are not valid JSON numbers"),
    (b"", {}, "the request body is empty"),
    (b"{}", {"Inference-Header-Content-Length": "abc"}, "invalid Inference-Header-Content-Length header 'abc'"),
    (b"{}", {"Inference-Header-Content-Length": "-2"}, "invalid Inference-Header-Content-Length header '-2'"),
    (b"{}", {"Inference-Header-Content-Length": "3"}, "Inference-Header-Content-Length is 3 but the body has only"),
    (BINARY_HEADER + bytes(16), {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
     "input 'X': binary_data_size is 20 bytes but only 16 bytes of binary data are left for it"),
    (BINARY_HEADER + bytes(24), {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
     "4 bytes follow the binary data of the inputs"),
])
def test_malformed_bodies_are_400(client, raw, headers, fragment):
    r = client.post(URL, content=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


@pytest.mark.parametrize(("bad", "message"), [
    (np.nan, "row 1, feature 'feature_3' (column 3): nan is not a finite number"),
    (np.inf, "row 1, feature 'feature_3' (column 3): inf is not a finite number"),
])
def test_non_finite_binary_values_are_refused_naming_row_and_feature(client, bad, message):
    x = np.array(ROWS, dtype="<f4")
    x[1, 3] = bad
    r = client.post(URL, **binary_request([{"name": "X", "shape": [3, 5], "datatype": "FP32"}], [x]))
    assert r.status_code == 400 and message in r.json()["error"]


def test_binary_size_that_disagrees_with_the_shape_is_refused(client):
    x = np.array(ROWS, dtype="<f4")
    r = client.post(URL, **binary_request([{"name": "X", "shape": [2, 5], "datatype": "FP32"}], [x]))
    assert r.status_code == 400
    assert "input 'X': shape [2, 5] holds 10 elements (40 bytes of FP32) but binary_data_size is 60 bytes " \
           "(15 elements)" in r.json()["error"]


def test_bodies_over_the_limit_are_413(make_client, demo_model):
    with make_client(demo_model, max_body_bytes=1024) as c:
        r = c.post(URL, json={"inputs": [matrix([ORIGINAL_ROW] * 100)]})
        assert r.status_code == 413 and "the limit is 1024 bytes" in r.json()["error"]
        bomb = gzip.compress(orjson.dumps({"inputs": [matrix([ORIGINAL_ROW] * 400)]}))
        assert len(bomb) < 1024
        r = c.post(URL, content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "decompressed request body is over the limit" in r.json()["error"]
