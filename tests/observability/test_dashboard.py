"""deploy/: the Grafana dashboard and the Prometheus and Grafana configuration cannot drift from the code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tabserve.observability.metrics import METRICS_PATH
from tests.observability.scrape import names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "tabserve.json"
_METRIC = re.compile(r"\btabserve_[a-z0-9_]+\b")


def queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and (key in ("expr", "definition") or key == "query" and "tabserve_" in value):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(client):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {name for q in queries(dashboard) for name in _METRIC.findall(q)}
    assert len(used) >= 15, sorted(used)
    row = [0.1, 0.2, 0.3, 0.4, 0.5]
    client.post("/api/v1/predict", json={"data": row})
    client.post("/v2/models/demo/infer", json={"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP64",
                                                           "data": row}]})
    client.app.state.metrics.rate_limited("api_key")
    client.app.state.metrics.shed("overloaded")
    exposed = names(client.get(METRICS_PATH).text)
    # a histogram with no observation yet (a shadow's) is declared by its family name alone
    missing = {n for n in used - exposed if re.sub(r"_(bucket|sum|count)$", "", n) not in exposed}
    assert not missing, f"the dashboard queries metrics /metrics does not expose: {sorted(missing)}"


def test_the_dashboard_covers_what_operators_look_at():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "tabserve"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    text = json.dumps(dashboard)
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,"):
        assert quantile in text
    for p in panels:
        assert p["targets"] and all(t.get("expr") for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "model", "version"} <= variables


def test_prometheus_scrapes_tabserve_metrics_on_port_8000():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "tabserve"]
    assert job["metrics_path"] == METRICS_PATH
    assert all(t.endswith(":8000") for c in job["static_configs"] for t in c["targets"])


def test_grafana_provisioning_loads_the_dashboard_folder_and_a_prometheus_datasource():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"].endswith(":9090")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "tabserve.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
