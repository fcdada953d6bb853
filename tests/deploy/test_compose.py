"""deploy/compose.yaml: the services are wired to each other (names, ports, URLs), every file it mounts or builds
from exists, every TABSERVE_* variable is a real setting, and the compose tool accepts the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import tabserve

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> dict[int, str]:
    """container port -> host address, from "HOST:PORT:CPORT" entries."""
    out = {}
    for entry in service.get("ports", []):
        host, _, rest = str(entry).partition(":")
        _, _, container = rest.partition(":")
        out[int(container)] = host
    return out


STACK = {"tabserve", "mlflow", "redis", "prometheus", "grafana"}


def test_the_stack_has_the_five_services_each_with_a_healthcheck(services: dict):
    assert set(services) == STACK | {"tabserve-alone"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_tabserve_starts_alone_or_with_the_stack_by_profile(services: dict):
    assert {n for n, s in services.items() if s.get("profiles") == ["stack"]} == STACK
    alone = services["tabserve-alone"]
    assert alone["profiles"] == ["alone"] and "depends_on" not in alone  # nothing else to start or to reach
    assert not {k for k in environment(alone) if "REDIS" in k or "STORAGE" in k}
    for key in ("build", "image", "ports", "healthcheck", "stop_grace_period"):
        assert alone[key] == services["tabserve"][key], key


def test_every_image_name_is_fully_qualified(services: dict):
    # podman resolves no short name (redis:7.4-alpine) without asking a registry: offline it fails
    for name, service in services.items():
        registry = service["image"].split("/", 1)[0]
        assert "/" in service["image"] and ("." in registry or registry == "localhost"), (name, service["image"])
    assert services["tabserve"]["pull_policy"] == "missing"  # built here, never pulled


def test_ports_are_published_on_loopback_only(services: dict):
    for name, service in services.items():
        for port, host in published(service).items():
            assert host == "127.0.0.1", f"{name} publishes {port} on {host!r}"
    assert 8000 in published(services["tabserve"])


def test_tabserve_is_built_from_the_repository_with_extras_that_exist(services: dict):
    build = services["tabserve"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).is_file()
    assert services["tabserve-alone"]["build"] == build
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = build["args"]["EXTRAS"].split(",")
    assert set(wanted) <= set(extras) and {"redis", "mlflow"} <= set(wanted)
    dockerfile = (context / build["dockerfile"]).read_text()
    for arg in build["args"]:
        assert re.search(rf"^ARG {arg}\b", dockerfile, re.MULTILINE), f"{build['dockerfile']} has no ARG {arg}"


def test_tabserve_reaches_mlflow_and_redis_by_their_service_names(services: dict):
    env = environment(services["tabserve"])
    tracking = urlparse(env["MLFLOW_TRACKING_URI"])
    mlflow_port = int(next(a.split("=", 1)[1] for a in services["mlflow"]["command"] if a.startswith("--port=")))
    assert (tracking.scheme, tracking.hostname, tracking.port) == ("http", "mlflow", mlflow_port)
    assert f"mlflow:{mlflow_port}" in environment(services["mlflow"])["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    storage = urlparse(env["TABSERVE_RATE_LIMIT_STORAGE"])
    assert (storage.scheme, storage.hostname, storage.port) == ("redis", "redis", 6379)
    assert set(services["tabserve"]["depends_on"]) == {"redis", "mlflow"}


def test_every_tabserve_variable_is_a_setting(services: dict):
    known = {f"TABSERVE_{name.upper()}" for name in tabserve.Settings.model_fields}
    env = environment(services["tabserve"])
    assert {k for k in env if k.startswith("TABSERVE_")} <= known
    # What compose passes must be valid values (defaults of the ${VAR:-default} forms filled in).
    values = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for k, v in env.items() if k.startswith("TABSERVE_")}
    settings = tabserve.Settings(**{k.removeprefix("TABSERVE_").lower(): v for k, v in values.items()})
    drain = settings.shutdown_delay_s + settings.shutdown_grace_s
    assert drain < _seconds(services["tabserve"]["stop_grace_period"])


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * (60 if unit == "m" else 1)


def test_the_tabserve_healthcheck_asks_readiness(services: dict):
    assert "/readyz" in " ".join(services["tabserve"]["healthcheck"]["test"])


def test_every_mounted_file_exists_and_named_volumes_are_declared(compose: dict, services: dict):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, missing from deploy/"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_prometheus_scrapes_tabserve_and_grafana_reads_prometheus(services: dict):
    mounts = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in services["prometheus"]["volumes"]
              if v.startswith(".")}
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    tabserve_port = int(environment(services["tabserve"]).get("TABSERVE_PORT", 8000))
    assert f"tabserve:{tabserve_port}" in targets
    grafana_mounts = {v.split(":")[1]: DEPLOY / v.split(":")[0] for v in services["grafana"]["volumes"]
                      if v.startswith(".")}
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    url = urlparse(datasource["url"])
    assert url.hostname == "prometheus" and url.port in published(services["prometheus"])
    provider = yaml.safe_load((provisioning / "dashboards" / "tabserve.yaml").read_text())["providers"][0]
    dashboards = grafana_mounts[provider["options"]["path"]]
    assert (dashboards / "tabserve.json").is_file()
    home = environment(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()


@pytest.mark.parametrize(("profile", "expected"), [("alone", {"tabserve-alone"}), ("stack", STACK)])
def test_the_compose_tool_accepts_the_file(profile: str, expected: set[str]):
    tools = []
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=60, check=False).returncode == 0:
        tools.append(["docker", "compose", "-f", str(COMPOSE), "--profile", profile, "config"])
    # podman-compose comes with the dev extra, in the same environment as the tests
    podman_compose = shutil.which("podman-compose", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if podman_compose and shutil.which("podman"):
        tools.append([podman_compose, "-f", str(COMPOSE), "--profile", profile, "config"])
    if not tools:
        pytest.skip("neither `docker compose` nor podman-compose (with podman) is available")
    for command in tools:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        rendered = yaml.safe_load(done.stdout)
        assert set(rendered["services"]) == expected
        tabserve_service = rendered["services"]["tabserve" if profile == "stack" else "tabserve-alone"]
        assert tabserve_service["image"] == "localhost/tabserve:compose"
        if profile == "stack":
            assert tabserve_service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


@pytest.mark.parametrize("name", ["tabserve", "tabserve-alone"])
def test_grpc_is_built_in_served_and_published_on_its_setting(services: dict, name: str):
    service = services[name]
    assert "grpc" in service["build"]["args"]["EXTRAS"].split(",")  # else TABSERVE_GRPC_PORT refuses to start
    grpc_port = tabserve.Settings(grpc_port=environment(service)["TABSERVE_GRPC_PORT"]).grpc_port
    assert published(service)[grpc_port] == "127.0.0.1"
