"""deploy/k8s: every manifest validates against the Kubernetes schemas (offline, kubernetes-validate), the
ServiceMonitor (a CRD) against the fields it uses, and the pieces fit together: labels and selectors, ports,
probe paths the app really answers, settings the server accepts, a grace period longer than the drain."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

import tabserve
from tabserve.api.guard import Admission

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"  # oldest still commonly run; its schemas also hold for newer clusters' fields used


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def manifests(kustomization: dict) -> dict[str, dict]:
    """kind -> the resource, from the files the kustomization lists."""
    out: dict[str, dict] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']}s"
            out[doc["kind"]] = doc
    return out


def pod_labels(manifests: dict) -> dict[str, str]:
    return manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]


def container(manifests: dict) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def config_env(manifests: dict) -> dict[str, str]:
    return dict(manifests["ConfigMap"]["data"])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_the_kustomization_lists_every_manifest_and_nothing_else(kustomization: dict):
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == yaml.safe_load((K8S / "namespace.yaml").read_text())["metadata"]["name"]
    images = {i["name"] for i in kustomization["images"]}
    assert container_image_names(kustomization) <= images


def container_image_names(kustomization: dict) -> set[str]:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    return {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_the_manifests_cover_what_a_deployment_needs(manifests: dict):
    assert set(manifests) == {"Namespace", "ConfigMap", "Deployment", "Service",
                              "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"}


@pytest.mark.parametrize("strict", [False, True], ids=["schema", "strict-schema"])
def test_every_builtin_resource_validates_against_the_kubernetes_schemas(manifests: dict, strict: bool):
    for kind, doc in manifests.items():
        if kind == "ServiceMonitor":
            continue
        # Raises ValidationError naming the field (strict: unknown fields too, e.g. a misspelt key).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=strict)


def test_a_broken_manifest_is_caught_by_the_validation(manifests: dict):
    broken = json.loads(json.dumps(manifests["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_service_monitor_has_the_fields_the_operator_needs(manifests: dict):
    monitor = manifests["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])
    assert int(endpoint["scrapeTimeout"][:-1]) <= int(endpoint["interval"][:-1])
    service = manifests["Service"]
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_selectors_find_the_pods(manifests: dict):
    labels = pod_labels(manifests)
    deployment = manifests["Deployment"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(manifests["Service"]["spec"]["selector"], labels)
    assert matches(manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_ports_line_up_from_the_service_to_the_server(manifests: dict):
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    for port in manifests["Service"]["spec"]["ports"]:
        assert port["targetPort"] in ports
    settings_port = int(config_env(manifests).get("TABSERVE_PORT", 8000))  # the image's default
    assert ports["http"] == settings_port


def test_the_config_is_referenced_and_accepted_by_the_server(manifests: dict, monkeypatch):
    refs = container(manifests)["envFrom"]
    assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} == {
        manifests["ConfigMap"]["metadata"]["name"]}
    known = {f"TABSERVE_{name.upper()}" for name in tabserve.Settings.model_fields}
    env = config_env(manifests)
    assert {k for k in env if k.startswith("TABSERVE_")} <= known
    assert set(env) - known <= {"MODEL_URI", "MLFLOW_TRACKING_URI"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = tabserve.Settings()
    Admission.from_settings(settings)  # the rate limit parses
    assert settings.rate_limit and not settings.api_keys


def test_the_api_keys_secret_is_optional_and_not_shipped(manifests: dict):
    # A shipped placeholder key made every prediction a 401: the pod starts without the Secret, keys come with it.
    (ref,) = [r["secretRef"] for r in container(manifests)["envFrom"] if "secretRef" in r]
    assert ref == {"name": "tabserve-api-keys", "optional": True}
    assert "Secret" not in manifests and not list(K8S.glob("secret*.yaml"))
    howto = (K8S / "kustomization.yaml").read_text()
    assert "create secret generic tabserve-api-keys" in howto and "TABSERVE_API_KEYS" in howto


def test_the_grace_period_outlasts_the_drain(manifests: dict, monkeypatch):
    for name, value in config_env(manifests).items():
        monkeypatch.setenv(name, value)
    settings = tabserve.Settings()
    grace = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.shutdown_delay_s > 0  # the drain replaces a preStop sleep
    assert grace > settings.shutdown_delay_s + settings.shutdown_grace_s
    assert "lifecycle" not in container(manifests)


def test_the_pod_runs_as_the_images_user_with_a_read_only_root(manifests: dict):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid, gid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE).groups()  # type: ignore[union-attr]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"])) == (uid, gid)
    security = container(manifests)["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    home = re.findall(r"TABSERVE_HOME=(\S+)", dockerfile)[-1]  # the final stage's
    mounts = {m["mountPath"]: m["name"] for m in container(manifests)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert home in mounts and "emptyDir" in volumes[mounts[home]]  # the one place the server writes


def test_the_autoscaler_has_a_cpu_request_to_scale_on(manifests: dict):
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert any(m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    assert container(manifests)["resources"]["requests"]["cpu"]
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


def test_the_probe_paths_answer_on_a_ready_server(manifests: dict, demo_model: tabserve.Model):
    probes = {name: container(manifests)[name]["httpGet"]["path"]
              for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] == "/readyz" and probes["livenessProbe"] == "/healthz"
    key = "ts_example_key_for_the_test"
    entry = json.dumps([{"name": "web", "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": ["predict"]}])
    settings = tabserve.Settings(api_keys=entry, access_log=False)  # once the Secret is created
    with TestClient(tabserve.create_app(settings, model=demo_model)) as client:
        for path in {*probes.values(), "/metrics"}:
            assert client.get(path).status_code == 200, path  # no API key needed for probes and scrapes
        assert client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}).status_code == 401


def test_as_shipped_the_pod_predicts_and_logs_that_no_key_is_asked(manifests: dict, demo_model: tabserve.Model,
                                                                   monkeypatch, capsys):
    for name, value in config_env(manifests).items():
        monkeypatch.setenv(name, value)
    with TestClient(tabserve.create_app(tabserve.Settings(access_log=False), model=demo_model)) as client:
        assert client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]}).status_code == 200
    assert "api_keys_off" in capsys.readouterr().out


def test_the_rendered_kustomization_validates(kustomization: dict):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its `kubectl kustomize` renders deploy/k8s)")
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"tabserve"}
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    (wanted,) = kustomization["images"]
    assert image == f"{wanted['newName']}:{wanted['newTag']}"


def test_the_retrain_cronjob_validates_and_runs_the_train_image():
    cronjob = yaml.safe_load((K8S / "retrain" / "cronjob.yaml").read_text())
    kubernetes_validate.validate(cronjob, KUBERNETES_VERSION, strict=True)
    (job,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert job["image"].endswith(":train") and job["args"][0] == "retrain" and "command" not in job
    dockerfile = (ROOT / "Dockerfile").read_text()
    train = re.search(r"^FROM \S+ AS train$(.*?)^FROM ", dockerfile, re.MULTILINE | re.DOTALL)
    assert train and 'ENTRYPOINT ["tabserve"]' in train.group(1) and "USER 10001:10001" in train.group(1)
    # the manifest docs/lifecycle.md shows is this file
    doc = (ROOT / "docs" / "lifecycle.md").read_text()
    shown = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
             if f"name: {cronjob['metadata']['name']}" in b]
    assert shown == [cronjob]


def test_the_grpc_component_wires_one_port_from_the_service_to_the_server(tmp_path: Path, monkeypatch):
    """deploy/k8s/grpc, applied as its comment in kustomization.yaml says: the rendered objects validate, the
    Service's grpc port reaches the container port the server listens on, and readiness asks grpc.health.v1."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its `kubectl kustomize` renders deploy/k8s)")
    assert "#   - grpc" in (K8S / "kustomization.yaml").read_text()
    base = os.path.relpath(K8S, tmp_path)  # kustomize takes no absolute path
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base], "components": [f"{base}/grpc"]}))
    done = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(done.stdout)}
    for doc in docs.values():
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    for name, value in docs["ConfigMap"]["data"].items():
        monkeypatch.setenv(name, value)
    settings = tabserve.Settings()
    assert ports == {"http": settings.port, "grpc": settings.grpc_port}
    (grpc,) = [p for p in docs["Service"]["spec"]["ports"] if p["name"] == "grpc"]
    assert ports[grpc["targetPort"]] == settings.grpc_port and grpc["appProtocol"] == "kubernetes.io/h2c"
    assert server["readinessProbe"]["grpc"] == {"port": settings.grpc_port}
    assert "httpGet" not in server["readinessProbe"]
