"""deploy/prometheus/alerts.yml: promtool accepts the rules and the configuration that loads them, the rules' unit
tests (alerts.test.yml) pass, and every metric the rules and the Grafana dashboard name is in the /metrics of a
running server with two workers (process CPU and memory included)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.observability.scrape import label_values, names
from tests.servers import running_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tabserve.json"
_METRIC = re.compile(r"\b(?:tabserve|process)_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run installs it)")
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rules_and_the_configuration_that_loads_them():
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr


def test_each_alert_fires_on_its_case_and_only_there():
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_cover_what_pages_an_operator():
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {"TabserveDown", "TabserveNotReady", "TabserveHigh5xxRatio", "TabserveHighP99Latency",
            "TabserveInputDrift"} <= set(alerts)
    tested = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    assert {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"]} == set(alerts)
    assert 'model!=""' in alerts["TabserveHighP99Latency"]["expr"] or "route!~" in alerts["TabserveHighP99Latency"]["expr"]


def queried(node) -> set[str]:
    if isinstance(node, dict):
        return {n for k, v in node.items() for n in (queried(v) if not isinstance(v, str) else
                                                     _METRIC.findall(v) if k in ("expr", "definition") else [])}
    if isinstance(node, list):
        return {n for item in node for n in queried(item)}
    return set()


def without_suffix(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


@pytest.mark.slow
def test_every_metric_of_the_dashboard_and_the_rules_is_exposed_by_a_running_server(demo_bundle: Path):
    dashboard = queried(json.loads(DASHBOARD.read_text()))
    rules = {n for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]
             for n in _METRIC.findall(r["expr"])}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "tabserve_shadow_abs_diff_bucket",
            "tabserve_model_load_failures_total"} <= dashboard
    # One worker: every family is declared at start (HELP and TYPE) even before its first event (a shadow
    # comparison, a failed load); with several workers a family appears at its first value.
    with running_server(str(demo_bundle)) as base:
        predict(base)
        text = httpx.get(f"{base}/metrics", timeout=10).text
    exposed = names(text) | {without_suffix(n) for n in names(text)}
    missing = {n for n in dashboard | rules if n not in exposed and without_suffix(n) not in exposed}
    assert not missing, f"named in deploy/ but not in /metrics: {sorted(missing)}"


@pytest.mark.slow
def test_with_two_workers_each_workers_cpu_and_memory_is_exposed(demo_bundle: Path):
    with running_server(str(demo_bundle), "--workers", "2") as base:
        predict(base)
        texts = [httpx.get(f"{base}/metrics", timeout=10).text for _ in range(4)]  # whichever worker answers
    for text in texts:
        assert len(label_values(text, "process_resident_memory_bytes", "pid")) == 2
        assert len(label_values(text, "process_cpu_seconds_total", "pid")) == 2


def predict(base: str) -> None:
    """Six predictions, as a client that honours Retry-After: with two workers the readiness probe may have
    reached only the one that is ready while its sibling still loads (it answers 503 with Retry-After)."""
    deadline = time.monotonic() + 60  # watchdog only
    for _ in range(6):
        while True:
            response = httpx.post(f"{base}/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}, timeout=10)
            if response.status_code != 503 or "retry-after" not in response.headers \
                    or time.monotonic() > deadline:
                break
            time.sleep(float(response.headers["retry-after"]))
        assert response.status_code == 200, response.text
