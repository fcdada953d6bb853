"""The OpenAPI document fits the served model: its feature names, types and categories, examples that predict
(each one POSTed answers 200), Authorize when API keys are on, response schemas for probes and listings, and a
document that follows the model when another one is swapped in."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import tabserve
from tabserve.api.auth import hash_key

KEY = "tsk_k"
KEYS = json.dumps([{"name": "app", "sha256": hash_key(KEY), "scopes": ["predict"]}])
SHAPED = ["/api/v1/predict", "/api/v1/predict/batch", "/api/v1/models/{name}/predict",
          "/v2/models/{model_name}/infer", "/invocations"]


def examples(doc: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Each documented request example of ``path``, as httpx keyword arguments, the path filled in."""
    op = doc["paths"][path]["post"]
    url = path
    for p in op.get("parameters", []):
        url = url.replace("{" + p["name"] + "}", str(p["example"]))
    out = []
    for media, content in op["requestBody"]["content"].items():
        if "examples" in content:
            out += [(url, {"json": e["value"]}) for e in content["examples"].values()]
        else:
            out.append((url, {"content": content["example"], "headers": {"content-type": media}}))
    return out


def test_the_iris_document_names_its_features_and_its_examples_predict(make_client, iris_model):
    with make_client(iris_model) as c:
        doc = c.get("/openapi.json").json()
        names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        single = doc["paths"]["/api/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert [f["title"] for f in single["properties"]["data"]["prefixItems"]] == names
        assert list(single["properties"]["record"]["properties"]) == names
        assert "[4.3, 7.9]" in single["properties"]["record"]["properties"]["sepal_length"]["description"]
        expected = iris_model.predict([[f["example"] for f in single["properties"]["data"]["prefixItems"]]])[0]
        answered = 0
        for path in SHAPED:
            for url, request in examples(doc, path):
                r = c.post(url, **request)
                assert r.status_code == 200, (url, request, r.text)
                body = r.json()
                got = body.get("prediction") or (body.get("predictions") or [None])[0] or \
                    body.get("outputs", [{}])[0].get("data", [None])[0]
                assert got == expected, (url, body)
                answered += 1
        assert answered >= 10


def test_text_features_are_strings_with_their_categories(make_client, tmp_path):
    import numpy as np
    import pandas as pd

    from tabserve.training import train_file

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"age": rng.integers(18, 80, 120), "city": rng.choice(["Brest", "Lyon", "Nice"], 120)})
    frame["rent"] = 300 + 2 * frame["age"] + (frame["city"] == "Nice") * 400 + rng.normal(0, 20, 120)
    frame.to_csv(tmp_path / "rents.csv", index=False)
    model = tabserve.load(train_file(tmp_path / "rents.csv", "rent", estimator="linear",
                                     dest=tmp_path / "rents").path)
    with make_client(model) as c:
        doc = c.get("/openapi.json").json()
        batch = doc["paths"]["/api/v1/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
        city = batch["schema"]["properties"]["records"]["items"]["properties"]["city"]
        assert city["type"] == "string" and city["enum"] == ["Brest", "Lyon", "Nice"]
        age = batch["schema"]["properties"]["records"]["items"]["properties"]["age"]
        assert age["type"] == "number" and isinstance(age["example"], int)
        for path in SHAPED:
            for url, request in examples(doc, path):
                assert c.post(url, **request).status_code == 200, (url, request)


def test_with_api_keys_the_document_declares_them_on_protected_routes(make_client, iris_model):
    with make_client(iris_model, api_keys=KEYS) as c:
        doc = c.get("/openapi.json").json()  # the document itself is public
        schemes = doc["components"]["securitySchemes"]
        assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}
        assert schemes["BearerToken"]["scheme"] == "bearer"
        for path in (*SHAPED, "/api/v1/models"):
            op = doc["paths"][path].get("post") or doc["paths"][path]["get"]
            assert {"ApiKeyHeader": []} in op["security"] and {"BearerToken": []} in op["security"], path
            assert "401" in op["responses"]
        for probe in ("/healthz", "/readyz", "/ping", "/api/v1/predict/health"):
            assert "security" not in doc["paths"][probe]["get"], probe
        # the schemes are what the server takes
        url, request = examples(doc, "/api/v1/predict")[0]
        assert c.post(url, **request).status_code == 401
        assert c.post(url, **request, headers={"X-API-Key": KEY}).status_code == 200
        assert c.post(url, **request, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with make_client(iris_model) as c:
        assert "securitySchemes" not in c.get("/openapi.json").json().get("components", {})


def test_probes_and_listings_have_response_schemas(make_client, iris_model):
    with make_client(iris_model) as c:
        paths = c.get("/openapi.json").json()["paths"]
        ready = paths["/readyz"]["get"]["responses"]
        assert ready["200"]["content"]["application/json"]["schema"]["properties"]["model_version"]
        assert ready["503"]["content"]["application/json"]["schema"]["properties"]["error"]
        assert paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        models = paths["/api/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert models["properties"]["models"]["items"]["properties"]["features"]
        assert set(c.get("/api/v1/models").json()) == set(models["required"])


def test_the_document_follows_a_swap(make_client, iris_bundle, demo_bundle, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(iris_bundle, served)
    with make_client(model_path=served, admin_routes="on") as c:
        deadline = time.monotonic() + 30  # watchdog only
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = c.get("/openapi.json").json()
        assert "sepal_length" in json.dumps(first["paths"]["/api/v1/predict"])
        shutil.rmtree(served)
        shutil.copytree(demo_bundle, served)
        name = c.get("/readyz").json()["model"]
        assert c.post(f"/api/v1/admin/models/{name}/reload").status_code == 200
        swapped = c.get("/openapi.json").json()
        text = json.dumps(swapped["paths"]["/api/v1/predict"])
        assert "feature_0" in text and "sepal_length" not in text
        for url, request in examples(swapped, "/api/v1/predict"):
            assert c.post(url, **request).status_code == 200


def test_the_document_is_built_once_per_version(make_client, iris_model):
    with make_client(iris_model) as c:
        app = c.app
        assert app.openapi() is app.openapi()
