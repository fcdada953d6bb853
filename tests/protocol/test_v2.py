from __future__ import annotations

import numpy as np
import orjson
import pytest

import tabserve
from tabserve.errors import InvalidInput
from tabserve.protocol import v2
from tabserve.protocol.tensors import datatype_for
from tabserve.protocol.v2_inputs import model_input
from tests.protocol.bundles import expected, write_shop_bundle

ROWS = [[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -0.5, 0.0, 2.0, 0.3]]


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory):
    return tabserve.load(write_shop_bundle(tmp_path_factory.mktemp("shop") / "shop"))


def request(inputs, **fields):
    return v2.decode_infer_request(orjson.dumps({"inputs": inputs, **fields}), None)


def matrix(rows, name="X", datatype="FP32"):
    return {"name": name, "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": rows}


def columns(names, rows, datatype="FP32"):
    return [{"name": n, "shape": [len(rows)], "datatype": datatype, "data": [r[j] for r in rows]}
            for j, n in enumerate(names)]


def score(model, req):
    return model.run(model_input(model.schema, v2.Signature(model).input_names, req.inputs, max_rows=100))


def test_request_fields_are_decoded(demo_model):
    req = request([matrix(ROWS)], id="r-1", parameters={"binary_data_output": True, "priority": 1},
                  outputs=[{"name": "variable", "parameters": {"binary_data": False}}, {"name": "other"}])
    assert req.id == "r-1" and req.binary_output is True
    assert [(o.name, o.binary) for o in req.outputs] == [("variable", False), ("other", True)]
    (tensor,) = req.inputs
    assert tensor.name == "X" and tensor.shape == [2, 5] and tensor.array.dtype == np.float64


@pytest.mark.parametrize(("payload", "fragment"), [
    ({}, "the request has no 'inputs'"),
    ({"inputs": []}, "the request has no 'inputs'"),
    ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "inputs[0] has no 'name'"),
    ({"inputs": [{"name": "X", "shape": [1], "datatype": "FP32"}]}, "input 'X' has no 'data'"),
    ({"inputs": [matrix(ROWS)], "id": 7}, "'id' must be a string"),
    ({"inputs": [matrix(ROWS)], "parameters": [1]}, "'parameters' of the request must be an object"),
    ({"inputs": [matrix(ROWS)], "outputs": "variable"}, "'outputs' must be a list"),
    ({"inputs": [{**matrix(ROWS), "parameters": {"binary_data_size": 40}}]}, "has both 'data' and a binary"),
])
def test_malformed_requests_are_refused(payload, fragment):
    with pytest.raises(InvalidInput, match=fragment.replace("[", r"\[")):
        v2.decode_infer_request(orjson.dumps(payload), None)


def test_binary_inputs_need_the_header_length():
    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 20}}]})
    with pytest.raises(InvalidInput, match="no Inference-Header-Content-Length header"):
        v2.decode_infer_request(body, None)
    req = v2.decode_infer_request(body + np.zeros(5, dtype="<f4").tobytes(), str(len(body)))
    assert req.inputs[0].array.tolist() == [[0.0] * 5]


def test_matrix_and_per_feature_layouts_score_like_predict(demo_model):
    want = demo_model.predict(np.array(ROWS))
    np.testing.assert_array_equal(score(demo_model, request([matrix(ROWS, name="anything")])).values, want)
    names = demo_model.schema.names
    np.testing.assert_array_equal(score(demo_model, request(columns(names, ROWS))).values, want)
    mixed = columns(names, ROWS)
    mixed[1]["datatype"], mixed[1]["shape"] = "INT64", [2, 1]
    mixed[1]["data"] = [[0], [1]]
    want_mixed = demo_model.predict(np.array([[r[0], i, *r[2:]] for i, r in enumerate(ROWS)]))
    np.testing.assert_array_equal(score(demo_model, request(mixed)).values, want_mixed)


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([matrix([r[:4] for r in ROWS])], "input 'X' has shape [2, 4] but the model expects [rows, 5]: 5 features"),
    ([matrix([["a"] * 5], datatype="BYTES")], "input 'X' is BYTES (strings) but it holds the numeric features"),
    ([matrix(ROWS, datatype="BYTES")], "input 'X' is BYTES: element 0 is 0.1; strings are required"),
    (columns(["feature_0", "feature_1", "feature_2", "feature_3", "age"], ROWS),
     "unknown input(s) 'age' and missing feature input(s) 'feature_4'"),
    (columns(["feature_0", "feature_1", "feature_2", "feature_3", "feature_3"], ROWS), "'feature_3' is given twice"),
    ([matrix([[0.1, 0.2, "n/a", 0.4, 0.5]])], "row 0, feature 'feature_2' (column 2): 'n/a' is a string"),
    ([matrix([[0.1, None, 0.3, 0.4, 0.5]])], "row 0, feature 'feature_1' (column 1): the value is null"),
    ([matrix([[0.1] * 5] * 101)], "input 'X' has 101 rows; the limit is 100 rows per request"),
    ([{"name": "X", "shape": [0, 5], "datatype": "FP32", "data": []}], "input 'X' has 0 rows"),
])
def test_input_problems_are_named(demo_model, inputs, fragment):
    with pytest.raises(InvalidInput, match=fragment.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        score(demo_model, request(inputs))


def test_per_feature_strings_are_refused_naming_the_feature(demo_model):
    inputs = columns(demo_model.schema.names, ROWS)
    inputs[2] = {"name": "feature_2", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}
    with pytest.raises(InvalidInput, match="input 'feature_2' is BYTES \\(strings\\) but feature 'feature_2' is "
                                           "numeric"):
        score(demo_model, request(inputs))


def test_categorical_models_take_their_own_tensors_or_one_per_feature(shop_model):
    rows = [(1.0, "red", 2.0), (1.5, "blue", None)]
    want = [expected(*r) for r in rows]
    own = [{"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [[1.0, 2.0], [1.5, None]]},
           {"name": "X_cat", "shape": [2, 1], "datatype": "BYTES", "data": ["red", "blue"]}]
    assert score(shop_model, request(own)).values.tolist() == want
    per_feature = [{"name": "size", "shape": [2], "datatype": "FP32", "data": [1.0, 1.5]},
                   {"name": "color", "shape": [2, 1], "datatype": "BYTES", "data": [["red"], ["blue"]]},
                   {"name": "weight", "shape": [2], "datatype": "FP64", "data": [2.0, None]}]
    assert score(shop_model, request(per_feature)).values.tolist() == want
    per_feature[1]["data"] = [["red"], ["green"]]
    with pytest.raises(InvalidInput, match="row 1, feature 'color' \\(column 1\\): unknown category 'green'"):
        score(shop_model, request(per_feature))
    per_feature[1] = {"name": "color", "shape": [2], "datatype": "INT64", "data": [1, 2]}
    with pytest.raises(InvalidInput, match="feature 'color' is categorical: send input 'color' as BYTES"):
        score(shop_model, request(per_feature))


def test_metadata_describes_the_manifest(demo_model, iris_model, shop_model):
    demo = v2.Signature(demo_model).metadata
    manifest = demo_model.manifest
    assert demo["name"] == "demo" and demo["versions"] == [demo_model.version]
    assert demo["platform"] == "onnxruntime_onnx" and demo["task"] == "regression"
    input_type = datatype_for(manifest.input.dtype)
    assert input_type in ("FP32", "FP64")
    assert demo["inputs"] == [{"name": manifest.input.name, "datatype": input_type, "shape": [-1, 5]}]
    (output,) = manifest.outputs
    assert demo["outputs"] == [{"name": output.name, "datatype": datatype_for(output.dtype),
                                "shape": [-1 if d is None else d for d in output.shape]}]
    assert demo["features"] == [{"name": n, "datatype": input_type, "shape": [-1]} for n in demo_model.schema.names]
    iris = v2.Signature(iris_model).metadata
    label, proba = iris_model.manifest.outputs
    assert iris["outputs"] == [{"name": label.name, "datatype": "BYTES", "shape": [-1]},
                               {"name": proba.name, "datatype": datatype_for(proba.dtype), "shape": [-1, 3]}]
    assert iris["classes"] == ["setosa", "versicolor", "virginica"]
    shop = v2.Signature(shop_model).metadata
    assert shop["inputs"] == [{"name": "X", "datatype": "FP64", "shape": [-1, 2]},
                              {"name": "X_cat", "datatype": "BYTES", "shape": [-1, 1]}]
    assert [(f["name"], f["datatype"]) for f in shop["features"]] == [("size", "FP64"), ("color", "BYTES"),
                                                                      ("weight", "FP64")]


def test_responses_carry_json_or_binary_outputs(iris_model):
    sig = v2.Signature(iris_model)
    label_name, proba_name = (o.name for o in iris_model.manifest.outputs)
    req = request([matrix([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])], id="abc",
                  outputs=[{"name": proba_name, "parameters": {"binary_data": True}}, {"name": label_name}])
    pred = score(iris_model, req)
    body, json_length = v2.encode_infer_response(iris_model, req, sig.select_outputs(req), pred, [])
    header = orjson.loads(body[:json_length])
    assert header["id"] == "abc" and header["model_name"] == "iris"
    proba, label = header["outputs"]
    dtype = pred.probabilities.dtype.newbyteorder("<")
    assert proba == {"name": proba_name, "datatype": datatype_for(dtype.name), "shape": [2, 3],
                     "parameters": {"binary_data_size": 6 * dtype.itemsize}}
    np.testing.assert_array_equal(np.frombuffer(body[json_length:], dtype=dtype).reshape(2, 3), pred.probabilities)
    assert label == {"name": label_name, "datatype": "BYTES", "shape": [2], "data": ["setosa", "virginica"]}
    with pytest.raises(InvalidInput, match=f"unknown output 'species'; the model's outputs are: {label_name}, "
                                           f"{proba_name}"):
        sig.select_outputs(request([matrix([[5.1, 3.5, 1.4, 0.2]])], outputs=[{"name": "species"}]))
