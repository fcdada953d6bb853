"""POST /api/v1/explain, POST /v2/models/{m}/explain, GET /api/v1/models/{m}/importance over HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tabserve
from tabserve.api.explain import ExplainEndpoints, ExplainService
from tabserve.errors import Overloaded
from tabserve.training import import_model

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
IRIS = [5.1, 3.5, 1.4, 0.2]


def _adds_up(part: dict[str, Any]) -> None:
    total = part["expected_value"] + sum(part["contributions"].values()) + part.get("rest", 0.0)
    assert total == pytest.approx(part["output"], abs=1e-6)


def test_one_row_names_every_feature_and_adds_up_to_the_prediction(client: Any, demo_model: Any) -> None:
    r = client.post("/api/v1/explain", json={"data": ROW})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == demo_model.name and body["method"] == "exact"
    assert body["algorithm"] == "tree_path_dependent" and body["output_space"] == "value"
    assert sorted(body["contributions"]) == sorted(demo_model.schema.names)
    _adds_up(body)
    assert body["output"] == pytest.approx(body["prediction"], abs=1e-9)
    assert body["prediction"] == pytest.approx(float(demo_model.predict(np.array([ROW]))[0]), abs=1e-12)
    values = list(body["contributions"].values())
    assert values == sorted(values, key=abs, reverse=True)  # largest effect first


def test_batch_rows_and_records_with_top_k(client: Any, demo_model: Any) -> None:
    rows = [ROW, [1.0, -1.0, 0.5, 2.0, -0.3]]
    by_rows = client.post("/api/v1/explain", json={"data": rows, "top_k": 2}).json()
    records = [dict(zip(demo_model.schema.names, r, strict=True)) for r in rows]
    by_records = client.post("/api/v1/explain", json={"records": records, "top_k": 2}).json()
    assert by_rows["explanations"] == by_records["explanations"]
    assert len(by_rows["explanations"]) == 2
    for row in by_rows["explanations"]:
        assert len(row["contributions"]) == 2 and "rest" in row
        _adds_up(row)


def test_approximate_method_is_saabas_and_adds_up(client: Any) -> None:
    body = client.post("/api/v1/explain", json={"data": ROW, "method": "approximate"}).json()
    assert body["method"] == "approximate" and body["algorithm"] == "saabas"
    _adds_up(body)


def test_classifier_explains_each_class_probability(make_client: Any, iris_model: Any) -> None:
    with make_client(iris_model) as c:
        body = c.post("/api/v1/explain", json={"data": IRIS}).json()
    assert body["output_space"] == "probability"
    assert set(body["outputs"]) == {"setosa", "versicolor", "virginica"} == set(body["probabilities"])
    for label, part in body["outputs"].items():
        _adds_up(part)
        assert part["output"] == pytest.approx(body["probabilities"][label], abs=1e-9)
    assert body["prediction"] == "setosa"


@pytest.mark.parametrize("payload,fragment", [
    ({"data": ROW, "top_k": 0}, "'top_k' must be a whole number"),
    ({"data": ROW, "method": "kernel"}, "'method' must be one of"),
    ({"data": ROW[:3]}, "5"),
    ({}, "send exactly one of 'data'"),
    ({"data": [ROW] * 1001}, "1000"),
])
def test_malformed_requests_get_422_naming_the_problem(client: Any, payload: dict, fragment: str) -> None:
    r = client.post("/api/v1/explain", json=payload)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_v2_explain_returns_tensors(client: Any, demo_model: Any) -> None:
    request = {"id": "42", "inputs": [{"name": "X", "datatype": "FP64", "shape": [2, 5], "data": ROW + ROW}],
               "parameters": {"method": "exact"}}
    r = client.post(f"/v2/models/{demo_model.name}/explain", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "42" and body["parameters"]["feature_names"] == demo_model.schema.names
    out = {o["name"]: o for o in body["outputs"]}
    assert out["contributions"]["shape"] == [2, 1, 5] and out["output"]["shape"] == [2, 1]
    phi = np.array(out["contributions"]["data"]).reshape(2, 1, 5)
    total = phi.sum(axis=2) + np.array(out["expected_value"]["data"])
    np.testing.assert_allclose(total.reshape(-1), out["output"]["data"], atol=1e-6)
    np.testing.assert_allclose(out["prediction"]["data"], out["output"]["data"], atol=1e-9)
    assert client.post("/v2/models/nope/explain", json=request).status_code == 404
    bad = client.post(f"/v2/models/{demo_model.name}/explain", json={"inputs": []})
    assert bad.status_code == 400 and "error" in bad.json()


def test_importance_is_served_per_feature(client: Any, demo_model: Any) -> None:
    r = client.get(f"/api/v1/models/{demo_model.name}/importance")
    assert r.status_code == 200, r.text
    body = r.json()
    names = set(demo_model.schema.names)
    assert set(body["impurity"]) == names and sum(body["impurity"].values()) == pytest.approx(1.0)
    assert set(body["permutation"]) == names and body["scoring"] == "r2" and body["checked_on"] == "holdout"
    top = max(body["permutation"], key=lambda n: body["permutation"][n]["mean"])
    assert body["permutation"][top]["mean"] > 0.05  # shuffling the main feature costs real r2
    assert client.get("/api/v1/models/nope/importance").status_code == 404


def test_a_bundle_without_explain_data_answers_422_not_500(make_client: Any, demo_bundle: Path,
                                                          tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    manifest = json.loads((old / "tabserve.json").read_text())
    del manifest["explain"], manifest["importance"]
    (old / "tabserve.json").write_text(json.dumps(manifest))
    (old / "explain.npz").unlink()
    with make_client(tabserve.load(old)) as c:
        r = c.post("/api/v1/explain", json={"data": ROW})
        assert r.status_code == 422 and r.json()["error"] == "explain_unavailable"
        assert "cannot be explained" in r.json()["detail"] and "export it again" in r.json()["detail"]
        assert c.get("/api/v1/models/demo/importance").status_code == 422
        assert c.post("/api/v1/predict", json={"data": ROW}).status_code == 200  # predictions unaffected


def test_a_full_explanation_queue_sheds_with_overloaded() -> None:
    service = ExplainService(max_pending=1)
    release = threading.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(service.run(release.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="explanation requests are already queued"):
            await service.run(lambda: None)
        release.set()
        assert await first is True

    try:
        asyncio.run(scenario())
    finally:
        service.close()


def test_explanation_limits_come_from_the_settings(make_client: Any, demo_model: Any) -> None:
    endpoints = ExplainEndpoints(None, tabserve.Settings(explain_workers=2, explain_max_pending=3,  # type: ignore[arg-type]
                                                         explain_max_rows=5))
    service = endpoints.service
    try:
        assert (service.max_pending, endpoints.max_rows) == (3, 5)
        meet = threading.Barrier(2, timeout=5)  # two jobs meet only if two threads run them at once

        async def both() -> list[Any]:
            return await asyncio.gather(service.run(meet.wait), service.run(meet.wait))

        assert sorted(asyncio.run(both())) == [0, 1]
    finally:
        service.close()
    with make_client(demo_model, explain_max_rows=2) as c:
        assert c.post("/api/v1/explain", json={"data": [ROW] * 2}).status_code == 200
        r = c.post("/api/v1/explain", json={"data": [ROW] * 3})
        assert r.status_code == 422 and "3 rows" in r.json()["detail"] and "2" in r.json()["detail"], r.json()


def test_explained_rows_are_charged_like_batch_predictions(make_client: Any, demo_model: Any) -> None:
    with make_client(demo_model, rate_limit="5/minute") as c:
        r = c.post("/api/v1/explain", json={"data": [ROW] * 3})
        assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "2"
        r = c.post("/api/v1/explain", json={"data": [ROW] * 3})
        assert r.status_code == 429 and "this request has 3 rows" in r.json()["detail"]


def test_v2_explain_of_a_named_version(client: Any, demo_model: Any) -> None:
    request = {"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 5], "data": ROW}],
               "parameters": {"method": "approximate"}}
    r = client.post(f"/v2/models/{demo_model.name}/versions/{demo_model.version}/explain", json=request)
    assert r.status_code == 200 and r.json()["parameters"]["algorithm"] == "saabas"
    assert r.json()["model_version"] == demo_model.version
    r = client.post(f"/v2/models/{demo_model.name}/versions/999/explain", json=request)
    assert r.status_code == 404 and "999" in r.json()["error"]


# issue #15 item 7: every bundle that predicts explains, or answers a one-line 422 saying why --------------------

BANDS = ["very low", "low", "lower", "below", "under", "middle", "over", "above", "higher", "high", "very high"]


def _imported(model: Any, X: Any, y: Any, folder: Path) -> tabserve.Model:
    """What ``tabserve import model.joblib --sample sample.csv --target target --trust-pickle`` serves."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    X.assign(target=y).to_csv(folder / "sample.csv", index=False)
    joblib.dump(model, folder / "model.joblib")
    result = import_model(folder / "model.joblib", folder / "sample.csv", target="target", trust_pickle=True,
                          dest=folder / "bundle")
    return tabserve.load(result.path)


def test_a_sparse_one_hot_pipeline_and_an_xgboost_boosted_forest_explain_over_http(make_client: Any,
                                                                                   tmp_path: Path) -> None:
    import pandas as pd
    from scipy import sparse
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    shap = pytest.importorskip("shap")
    xgboost = pytest.importorskip("xgboost")
    frame = load_diabetes(as_frame=True).frame
    X = frame[["age", "bp", "s5"]].assign(bmi_band=pd.qcut(frame["bmi"], 11, labels=BANDS).astype(str))
    y = frame["target"] / 100
    columns = ColumnTransformer([("num", "passthrough", ["age", "bp", "s5"]), ("cat", OneHotEncoder(), ["bmi_band"])])
    pipeline = Pipeline([("columns", columns), ("model", GradientBoostingRegressor(n_estimators=30, random_state=0))])
    pipeline.fit(X, y)
    record = X.iloc[7].to_dict()
    cols = pipeline[:-1].transform(X.iloc[[7]])
    assert sparse.issparse(cols)  # scikit-learn's default sparse_threshold: the case that answered 422
    with make_client(_imported(pipeline, X, y, tmp_path / "sparse")) as c:
        r = c.post("/api/v1/explain", json={"records": [record]})
    assert r.status_code == 200, r.text
    part = r.json()["explanations"][0]
    _adds_up(part)
    assert part["output"] == pytest.approx(float(pipeline.predict(X.iloc[[7]])[0]), rel=1e-12)
    values = shap.TreeExplainer(pipeline[-1]).shap_values(cols.toarray())[0]
    assert part["contributions"]["bmi_band"] == pytest.approx(values[3:].sum(), rel=1e-9, abs=1e-12)
    assert part["contributions"]["age"] == pytest.approx(values[0], rel=1e-9, abs=1e-12)

    X = frame.drop(columns="target")
    forest = xgboost.XGBRegressor(n_estimators=8, num_parallel_tree=3, max_depth=4, subsample=0.8,
                                  colsample_bynode=0.8, random_state=0).fit(X, y)
    with make_client(_imported(forest, X, y, tmp_path / "forest")) as c:
        r = c.post("/api/v1/explain", json={"data": X.iloc[3].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["algorithm"] == "tree_path_dependent" and sorted(body["contributions"]) == sorted(X.columns)
    _adds_up(body)
    assert body["output"] == pytest.approx(float(forest.predict(X.iloc[[3]])[0]), rel=1e-6)


def test_a_model_without_an_explainer_answers_a_one_line_422_naming_it(make_client: Any, tmp_path: Path) -> None:
    import warnings

    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_diabetes(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's convergence warning
        mlp = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0))
        mlp.fit(X, y)
    model = _imported(mlp, X, y, tmp_path)
    with make_client(model) as c:
        r = c.post("/api/v1/explain", json={"data": X.iloc[0].tolist()})
        assert r.status_code == 422 and r.json()["error"] == "explain_unavailable", r.text
        detail = r.json()["detail"]
        assert "\n" not in detail and detail.startswith(f"model {model.name}:{model.version} cannot be explained: ")
        assert "MLPRegressor has no TreeSHAP or linear explainer in tabserve: it is a neural network; explained are " \
               "decision trees" in detail
        v2 = c.post(f"/v2/models/{model.name}/explain", json={"inputs": [
            {"name": "X", "datatype": "FP64", "shape": [1, 10], "data": X.iloc[0].tolist()}]})
        assert v2.status_code == 400 and "it is a neural network" in v2.json()["error"], v2.text
        assert c.post("/api/v1/predict", json={"data": X.iloc[0].tolist()}).status_code == 200


def test_a_multi_line_reason_stored_by_an_older_tabserve_is_answered_in_one_line(make_client: Any, demo_bundle: Path,
                                                                                 tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    manifest = json.loads((old / "tabserve.json").read_text())
    del manifest["explain"]
    manifest["training"]["explain_unavailable"] = (  # what the XGBoost boosted forest stored before
        "explanation data could not be built (XGBoostError: [16:07:21] gbtree.h:130: Check failed: end <= "
        "model.BoostedRounds() (30 vs. 10) : Out of range for tree layers.\nStack trace:\n  [bt] (0) libxgboost.so")
    (old / "tabserve.json").write_text(json.dumps(manifest))
    (old / "explain.npz").unlink()
    with make_client(tabserve.load(old)) as c:
        r = c.post("/api/v1/explain", json={"data": ROW})
    assert r.status_code == 422 and r.json()["error"] == "explain_unavailable"
    assert r.json()["detail"].endswith("Out of range for tree layers.") and "Stack trace" not in r.json()["detail"]
