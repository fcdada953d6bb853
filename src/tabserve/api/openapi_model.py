"""The OpenAPI document shaped by the served model: request schemas and examples from its manifest, the API-key
security schemes, and response schemas for the probes and model listings.

FastAPI builds the route part once, from the route table; this adds what depends on the model: each feature's
name, type, categories and training range, and examples that predict (each numeric feature's training median,
each text feature's first category). The document follows the default model: it is rebuilt when another
version answers (a swap, a reload) and cached for that version, so ``/docs`` always offers a request that the
model being served accepts. Routes that name a model in their path (``{name}``, ``{model_name}``) are shaped
for the default model, whose name is their example.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from tabserve.api.routes import RouteTable
from tabserve.core.manifest import Feature
from tabserve.core.model import Model
from tabserve.protocol import v2
from tabserve.serving.facade import ServedModels
from tabserve.settings import Settings

API_KEY, BEARER = "ApiKeyHeader", "BearerToken"
SECURITY_SCHEMES = {
    API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key",
              "description": "A tabserve API key (tabserve keys new), sent as X-API-Key."},
    BEARER: {"type": "http", "scheme": "bearer", "description": "The same key, as Authorization: Bearer KEY."},
}
_SECURED = ("read", "predict", "admin")
_JSON = "application/json"


def install(app: FastAPI, models: ServedModels, table: RouteTable, settings: Settings) -> None:
    """Replace ``app.openapi`` by the model-shaped document (``/openapi.json``, ``/docs`` and ``/redoc`` read it)."""
    routes_only = app.openapi  # FastAPI's: the route table's document, built once
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        model = models.model
        key = (model.name, model.version, id(model)) if model is not None else None
        if cached.get("key") != key or "doc" not in cached:
            doc = copy.deepcopy(routes_only())
            secure(doc, table, bool(settings.api_keys))
            describe_responses(doc)
            if model is not None:
                shape(doc, model, settings)
            cached.update(key=key, doc=doc)
        return cached["doc"]

    app.openapi = openapi  # type: ignore[method-assign]


# -- security ------------------------------------------------------------------------------------------------

def secure(doc: dict[str, Any], table: RouteTable, keys_on: bool) -> None:
    """With API keys configured: both ways of presenting a key, required by every route that needs one (Swagger
    UI then shows Authorize), and the 401/403 those routes answer."""
    if not keys_on:
        return
    doc.setdefault("components", {})["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    for path, method, op in _operations(doc):
        access = table.access(method.upper(), path)  # a template matches itself: "{name}" binds as a value
        if access in _SECURED:
            op["security"] = [{API_KEY: []}, {BEARER: []}]
            responses = op.setdefault("responses", {})
            responses.setdefault("401", {"description": "No API key, or an unknown one"})
            if access == "admin":
                responses.setdefault("403", {"description": "The key lacks the admin scope"})


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc.get("paths", {}).items() for method, op in item.items()
            if isinstance(op, dict) and method in ("get", "post", "put", "delete", "patch")]


# -- responses of probes and listings ------------------------------------------------------------------------

_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
_READY = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "string", "description": "ready; else loading, failed, draining"},
    "model": {"type": "string"}, "model_version": {"type": "string"},
    "error": {"type": ["string", "null"], "description": "Why no model is ready"}}}
_MODEL = {"type": "object", "description": "The model's manifest (tabserve.json) with its serving state",
          "required": ["name"], "properties": {
              "name": {"type": "string"}, "version": {"type": "string"}, "task": {"type": "string"},
              "features": {"type": "array", "items": {"type": "object", "properties": {
                  "name": {"type": "string"}, "dtype": {"type": "string"}, "kind": {"type": "string"},
                  "categories": {"type": ["array", "null"], "items": {"type": "string"}}}}},
              "classes": {"type": ["array", "null"]},
              "serving": {"type": "object"}, "pinned_versions": {"type": "array", "items": {"type": "string"}},
              "traffic": {"type": ["object", "null"]}}}
_RESPONSES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/healthz", "get"): {"200": _STATUS},
    ("/readyz", "get"): {"200": _READY, "503": _READY},
    ("/ping", "get"): {"503": _READY},
    ("/api/v1/models", "get"): {"200": {"type": "object", "required": ["models", "state"], "properties": {
        "models": {"type": "array", "items": _MODEL}, "state": {"type": "string"}}}},
    ("/api/v1/models/{name}", "get"): {"200": _MODEL},
}


def describe_responses(doc: dict[str, Any]) -> None:
    paths = doc.get("paths", {})
    for (path, method), by_status in _RESPONSES.items():
        op = paths.get(path, {}).get(method)
        if op is None:
            continue
        for status, schema in by_status.items():
            response = op.setdefault("responses", {}).setdefault(status, {"description": "See the schema"})
            response["content"] = {_JSON: {"schema": schema}}


# -- request schemas and examples from the manifest ----------------------------------------------------------

def example_value(feature: Feature) -> Any:
    """A value the model takes: a text feature's first category, a number's training median (else its mean)."""
    if feature.kind == "categorical":
        return feature.categories[0] if feature.categories else "a"
    stats = feature.stats
    if stats is None:
        return 0.0
    q = stats.quantiles
    value = q.values[q.probs.index(0.5)] if 0.5 in q.probs else stats.mean
    value = min(max(value, stats.min), stats.max)
    return round(value) if feature.dtype.startswith(("int", "uint", "bool")) else float(value)


def feature_schema(feature: Feature, reject_ranges: bool) -> dict[str, Any]:
    if feature.kind == "categorical":
        out: dict[str, Any] = {"type": ["string", "null"] if feature.allow_missing else "string"}
        if feature.categories and feature.handle_unknown != "ignore":
            out["enum"] = [*feature.categories, *([None] if feature.allow_missing else [])]
        elif feature.categories:
            out["description"] = f"seen in training: {', '.join(feature.categories[:20])}"
    else:
        out = {"type": ["number", "null"] if feature.allow_missing else "number"}
        if feature.stats is not None:
            lo, hi = feature.stats.min, feature.stats.max
            if reject_ranges:
                out["minimum"], out["maximum"] = lo, hi
            out["description"] = f"{feature.dtype}; training range [{lo:g}, {hi:g}]"
    return {"title": feature.name, **out, "example": example_value(feature)}


class ModelShapes:
    """The JSON schemas and example rows of one model's requests."""

    def __init__(self, model: Model, settings: Settings) -> None:
        features = model.manifest.features
        reject = settings.range_policy == "reject"
        self.model = model
        self.names = [f.name for f in features]
        self.fields = [feature_schema(f, reject) for f in features]
        self.row = [example_value(f) for f in features]
        self.record = dict(zip(self.names, self.row, strict=True))
        self.max_rows = settings.max_batch_rows
        n = len(features)
        self.row_schema = {"type": "array", "prefixItems": self.fields, "items": False, "minItems": n,
                           "maxItems": n, "description": f"One value per feature, in this order: "
                           f"{', '.join(self.names[:50])}{', ...' if n > 50 else ''}"}
        self.record_schema = {"type": "object", "properties": dict(zip(self.names, self.fields, strict=True)),
                              "required": [f.name for f in features if not f.allow_missing],
                              "additionalProperties": False}

    def rows_schema(self, of: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": of, "minItems": 1, "maxItems": self.max_rows}

    def v1_single(self) -> dict[str, Any]:
        schema = {"type": "object", "description": f"One row for model {self.model.name!r}: 'data' (values in "
                  "feature order), or 'record' / 'records' (one {feature: value} object)", "properties": {
                      "data": self.row_schema, "record": self.record_schema,
                      "records": {**self.rows_schema(self.record_schema), "maxItems": 1}}}
        return _body(schema, {"data": ("Values in feature order", {"data": self.row}),
                              "record": ("One record", {"record": self.record})})

    def v1_batch(self) -> dict[str, Any]:
        schema = {"type": "object", "description": f"Rows for model {self.model.name!r}: 'data' or 'records'",
                  "properties": {"data": self.rows_schema(self.row_schema),
                                 "records": self.rows_schema(self.record_schema)}}
        return _body(schema, {"data": ("Rows in feature order", {"data": [self.row, self.row]}),
                              "records": ("Rows as records", {"records": [self.record]})})

    def v2_infer(self) -> dict[str, Any]:
        features = v2.Signature(self.model).metadata["features"]
        inputs = [{"name": f["name"], "shape": [1], "datatype": f["datatype"], "data": [value]}
                  for f, value in zip(features, self.row, strict=True)]
        example = {"inputs": inputs}
        schema = {"type": "object", "required": ["inputs"], "description": "Open Inference Protocol request: "
                  "one [rows] input per feature (named after it), or the model's input tensors (GET "
                  "/v2/models/{model_name} lists both)", "properties": {
                      "id": {"type": "string"}, "parameters": {"type": "object"},
                      "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape",
                                                                                          "datatype"]}},
                      "outputs": {"type": "array", "items": {"type": "object"}}}}
        return _body(schema, {"features": ("One input per feature", example)})

    def invocations(self) -> dict[str, Any]:
        split = {"dataframe_split": {"columns": self.names, "data": [self.row]}}
        schema = {"type": "object", "description": "Exactly one of dataframe_split, dataframe_records, instances "
                  "or inputs, as for mlflow models serve", "properties": {
                      "dataframe_split": {"type": "object", "properties": {
                          "columns": {"type": "array", "items": {"type": "string", "enum": self.names}},
                          "data": self.rows_schema({"type": "array"})}, "required": ["data"]},
                      "dataframe_records": self.rows_schema(self.record_schema),
                      "instances": {"type": "array"}, "inputs": {"type": ["object", "array"]},
                      "params": {"type": "object", "properties": {
                          "output": {"type": "string", "enum": ["predictions", "probabilities"]}}}}}
        body = _body(schema, {"dataframe_split": ("pandas to_dict(orient='split')", split),
                              "dataframe_records": ("pandas to_dict(orient='records')",
                                                    {"dataframe_records": [self.record]})})
        csv = ",".join(self.names) + "\n" + ",".join(map(str, self.row)) + "\n"
        body["requestBody"]["content"]["text/csv"] = {"schema": {"type": "string"}, "example": csv}
        return body


def _body(schema: dict[str, Any], examples: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {_JSON: {
        "schema": schema, "examples": {k: {"summary": s, "value": v} for k, (s, v) in examples.items()}}}}}


_SHAPED: dict[str, Callable[[ModelShapes], dict[str, Any]]] = {
    "/api/v1/predict": ModelShapes.v1_single,
    "/api/v1/predict/batch": ModelShapes.v1_batch,
    "/api/v1/models/{name}/predict": ModelShapes.v1_single,
    "/api/v1/models/{name}/predict/batch": ModelShapes.v1_batch,
    "/api/v1/models/{name}/versions/{version}/predict": ModelShapes.v1_single,
    "/api/v1/models/{name}/versions/{version}/predict/batch": ModelShapes.v1_batch,
    "/v2/models/{model_name}/infer": ModelShapes.v2_infer,
    "/v2/models/{model_name}/versions/{model_version}/infer": ModelShapes.v2_infer,
    "/invocations": ModelShapes.invocations,
}


def shape(doc: dict[str, Any], model: Model, settings: Settings) -> None:
    shapes = ModelShapes(model, settings)
    for path, build in _SHAPED.items():
        op = doc.get("paths", {}).get(path, {}).get("post")
        if op is None:
            continue
        op.update(build(shapes))
        for param in op.get("parameters", []):
            if param.get("in") == "path" and param.get("name") in ("name", "model_name"):
                param["example"] = model.name
            elif param.get("in") == "path" and param.get("name") in ("version", "model_version"):
                param["example"] = model.version


__all__ = ["SECURITY_SCHEMES", "ModelShapes", "example_value", "install"]
