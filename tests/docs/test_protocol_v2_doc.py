"""docs/protocol-v2.md cannot drift: its curl requests are replayed and must get the answers it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import tabserve

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol-v2.md"
PORTS = {"8765": "demo", "8766": "iris"}
CURL = re.compile(r"^\$ curl (-X POST )?localhost:(\d+)(/v2\S*)(?: -d '(.*)')?\n(?:(\d{3}) )?([\[{].*)$", re.MULTILINE)
# The examples are real answers of the demo and iris models: when the exporter changes what they answer (output
# names, datatypes, values), run the requests again against `tabserve serve` and update the document.
PAIR = re.compile(r"^(\{\"inputs\".*)\n(\d{3}) (\{.*)$", re.MULTILINE)


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def clients(demo_model, iris_model):
    settings = tabserve.Settings(access_log=False, admin_routes="on")  # as the document says for load/unload
    made = {name: TestClient(tabserve.create_app(settings, model=model))
            for name, model in (("demo", demo_model), ("iris", iris_model))}
    for c in made.values():
        c.__enter__()
    yield made
    for c in made.values():
        c.__exit__(None, None, None)


def test_documented_curl_requests_get_the_documented_answers(clients):
    """In document order: the repository examples unload the model, then load it again."""
    examples = CURL.findall(DOC.read_text(encoding="utf-8"))
    assert len(examples) >= 15, "docs/protocol-v2.md lost its curl examples"
    for post, port, path, body, status, shown in examples:
        client = clients[PORTS[port]]
        r = client.post(path, content=body) if post else client.get(path)
        assert r.status_code == int(status or 200), (path, body, r.text)
        assert rounded(r.json()) == rounded(json.loads(shown)), (path, body)


def test_documented_errors_are_what_the_demo_model_answers(clients):
    pairs = PAIR.findall(DOC.read_text(encoding="utf-8"))
    assert len(pairs) >= 5, "docs/protocol-v2.md lost its error examples"
    for body, status, shown in pairs:
        r = clients["demo"].post("/v2/models/demo/infer", content=body)
        assert (r.status_code, r.json()) == (int(status), json.loads(shown)), body
