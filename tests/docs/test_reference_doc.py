"""docs/reference.md cannot drift: every metric a real demo server exposes and every key of a real manifest
are documented there (every setting is checked by test_integration_doc.py's configuration-table test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

import tabserve

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def section(title: str) -> str:
    text = REFERENCE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_exposed_metric_is_in_the_reference(demo_model: tabserve.Model, tmp_path: Path) -> None:
    # A payload log on, so that the loop's metrics are registered too.
    settings = tabserve.Settings(access_log=False, payload_log_dir=tmp_path / "payload")
    with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
        assert client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}).status_code == 200
        exposition = client.get("/metrics").text
    exposed = set(re.findall(r"^# TYPE (\w+) ", exposition, re.MULTILINE))
    assert "tabserve_requests_total" in exposed or "tabserve_requests" in exposed
    documented = set(re.findall(r"`(\w+)`", section("Metrics")))
    missing = sorted(name for name in exposed
                     if name not in documented and f"{name}_total" not in documented)
    assert not missing, f"docs/reference.md, Metrics, lacks: {missing}"


def test_every_manifest_key_is_in_the_reference(demo_bundle: Path) -> None:
    manifest = json.loads((demo_bundle / "tabserve.json").read_text(encoding="utf-8"))
    keys = set(manifest) | set(tabserve.Manifest.model_fields)  # the optional sections too
    rows = section("The bundle")
    missing = sorted(key for key in keys if f"`{key}`" not in rows)
    assert not missing, f"docs/reference.md, The bundle, lacks the manifest key(s): {missing}"


def test_documented_validation_errors_are_what_the_demo_model_answers(demo_model: tabserve.Model) -> None:
    text = section("Validation and errors")
    block = text[text.index("Real responses from the demo model:"):]
    block = block[block.index("```text\n") + 8:block.index("\n```", block.index("```text\n"))]
    pairs = re.findall(r"^(batch )?(.+)\n(\d{3}) (\{.*\})$", block, re.MULTILINE)
    assert len(pairs) >= 5, "reference.md lost its validation examples"
    settings = tabserve.Settings(access_log=False)
    with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
        for batch, request, status, shown in pairs:
            path = "/api/v1/predict/batch" if batch else "/api/v1/predict"
            rows = re.fullmatch(r"of (\d+) rows", request)
            size = re.fullmatch(r"of (\d+) bytes", request)
            if rows:
                body = json.dumps({"data": [[0.5] * 5] * int(rows.group(1))})
            elif size:
                body = '{"data": [' + " " * (int(size.group(1)) - 12) + "]}"
                assert len(body) == int(size.group(1))
            else:
                body = request
            r = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert (r.status_code, r.json()) == (int(status), json.loads(shown)), request


def test_documented_probes_and_range_policies_are_what_the_demo_model_answers(demo_model: tabserve.Model) -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    probes = re.findall(r"^GET (/\S+) +(\{.*\})$", text, re.MULTILINE)
    assert len(probes) >= 3, "reference.md lost its probe examples"
    with TestClient(tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)) as client:
        for path, shown in probes:
            assert client.get(path).json() == json.loads(shown), path
    policies = re.findall(r"^(warn|reject) +(\d{3}) (\{.*\})$", text, re.MULTILINE)
    assert {p for p, _, _ in policies} == {"warn", "reject"}
    for policy, status, shown in policies:
        settings = tabserve.Settings(access_log=False, range_policy=policy)
        with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
            r = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 9.0]})
        expected, actual = json.loads(shown), r.json()
        assert r.status_code == int(status), policy
        assert set(actual) == set(expected), policy
        for key in set(expected) - {"latency_ms", "total_time_ms", "prediction"}:
            assert actual[key] == expected[key], (policy, key)
        if "prediction" in expected:
            assert abs(actual["prediction"] - expected["prediction"]) <= 1e-6 * abs(expected["prediction"]), policy
