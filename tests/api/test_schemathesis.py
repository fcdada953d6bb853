"""Property-based requests from the OpenAPI schema (schemathesis), positive and negative: never a 5xx.

In-process against the ASGI app, with API keys, a rate limit and a concurrency limit on, so the guard is
fuzzed too. Bounded: a fixed number of examples per mode, no shrinking, no example database.
"""

from __future__ import annotations

import json

import pytest

import tabserve
from tabserve.api.auth import hash_key

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

KEY = "tsk_schemathesis-predict-key"
EXAMPLES = 300  # per mode; a few seconds each


@pytest.fixture
def schema(demo_model):
    """A fresh app per test: schemathesis' pytest plugin ends the app's lifespan after each test."""
    keys = json.dumps([{"name": "fuzz", "sha256": hash_key(KEY), "scopes": ["predict"]}])
    # The predict-only key makes load/unload answer 403: the served model stays, so no 503 comes from an unload.
    app = tabserve.create_app(tabserve.Settings(access_log=False, api_keys=keys, rate_limit="1000000/minute",
                                                max_concurrent_requests=64), model=demo_model)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    loaded.config.generation.update(database="none")
    return loaded


@pytest.mark.parametrize(("mode", "operations"), [(GenerationMode.POSITIVE, 12), (GenerationMode.NEGATIVE, 2)])
def test_no_request_from_the_schema_gets_a_5xx(schema, mode, operations):
    failures: list[str] = []
    seen: set[str] = set()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy(generation_mode=mode))
    def run(case) -> None:
        seen.add(f"{case.method} {case.path}")
        response = case.call(headers={"Authorization": f"Bearer {KEY}"})
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                            f"{response.text[:300]}")

    run()
    assert failures == []
    print(f"{mode}: {len(seen)} operations: {sorted(seen)}")
    assert len(seen) >= operations  # negative cases exist only where the schema constrains something


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
                        st.sampled_from(["data", "records", "inputs", "outputs", "name", "shape", "datatype",
                                         "parameters", "binary_data_size", "feature_0", "ready"]) | st.text(max_size=5),
                        inner, max_size=5), max_leaves=30)
POSTS = ["/api/v1/predict", "/api/v1/predict/batch", "/v2/models/demo/infer", "/v2/models/demo/versions/1/infer",
         "/v2/repository/index"]


def test_arbitrary_bodies_never_get_a_5xx(client):
    """Where the schema leaves nothing to negate (v2 bodies are free-form tensors), bodies built from protocol
    words, raw bytes, and lying length or encoding headers."""
    failures: list[str] = []
    headers = st.fixed_dictionaries({}, optional={
        "Inference-Header-Content-Length": st.integers(-5, 400).map(str) | st.text("x1- ", max_size=4),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity", "br", ""])})

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(POSTS), body=JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=300),
           headers=headers)
    def run(path: str, body: bytes, headers: dict[str, str]) -> None:
        r = client.post(path, content=body, headers=headers)
        if r.status_code >= 500:
            failures.append(f"POST {path} {headers} {body[:80]!r} -> {r.status_code}: {r.text[:200]}")

    run()
    assert failures == []
