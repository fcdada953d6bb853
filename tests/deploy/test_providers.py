"""TABSERVE_EXECUTION_PROVIDERS: which onnxruntime providers a server asks for, the CPU fallback when a GPU
provider is missing, the refusal of unknown names, and the one log line naming the provider really used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

import tabserve
from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model
from tabserve.core.runtime import CPU, RuntimeOptions, select_providers
from tabserve.errors import ConfigError

CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_BUILD = [TRT, CUDA, CPU]  # what onnxruntime-gpu reports, GPU or not


def test_auto_prefers_cuda_when_the_build_has_it_and_never_picks_tensorrt_by_itself():
    assert select_providers("auto", available=GPU_BUILD) == (CUDA, CPU)
    assert select_providers("AUTO", available=GPU_BUILD) == (CUDA, CPU)


def test_auto_on_the_cpu_package_is_the_cpu_provider():
    assert select_providers("auto", available=["AzureExecutionProvider", CPU]) == (CPU,)


def test_an_explicit_list_keeps_its_order_and_always_ends_with_the_cpu_fallback():
    assert select_providers(f"{TRT}, {CUDA}", available=GPU_BUILD) == (TRT, CUDA, CPU)
    assert select_providers([CUDA, CPU, CUDA], available=GPU_BUILD) == (CUDA, CPU)
    assert select_providers(CPU, available=GPU_BUILD) == (CPU,)


def test_a_known_provider_this_installation_lacks_falls_back_to_cpu():
    assert select_providers(f"{TRT},{CUDA},{CPU}", available=[CPU]) == (CPU,)


def test_an_unknown_provider_is_a_config_error_that_names_it_and_the_known_ones():
    with pytest.raises(ConfigError) as err:
        select_providers("CUDAExecutionProvider,CudaProvider", available=GPU_BUILD)
    assert "'CudaProvider'" in str(err.value) and CUDA in str(err.value) and "'auto'" in str(err.value)
    with pytest.raises(ConfigError, match="empty list"):
        select_providers(" , ")


def test_a_session_asked_for_cuda_without_it_reports_the_cpu_provider_it_really_uses(demo_bundle: Path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is only observable without it")
    model = Model.from_bundle(read_bundle(demo_bundle), RuntimeOptions(providers=(CUDA, CPU)))
    assert model.runtime.providers == (CPU,)
    reference = tabserve.load(demo_bundle)
    row = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    assert model.predict(row).tolist() == reference.predict(row).tolist()


def test_the_server_logs_the_provider_really_used_once_per_model(demo_bundle: Path, capfd):
    settings = tabserve.Settings(model_path=demo_bundle, access_log=False,
                                 execution_providers=f"{TRT},{CUDA},{CPU}")
    with TestClient(tabserve.create_app(settings)) as client:
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
        response = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]})
        assert response.status_code == 200
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    provider_lines = [line for line in lines if line.get("event") == "execution_provider"]
    assert len(provider_lines) == 1, lines
    expected = CUDA if CUDA in ort.get_available_providers() else CPU
    assert provider_lines[0]["provider"] == expected
    assert provider_lines[0]["requested"][-1] == CPU


def test_create_app_refuses_an_unknown_provider():
    with pytest.raises(ConfigError, match="unknown execution provider 'GPU'"):
        tabserve.create_app(tabserve.Settings(execution_providers="GPU"))


def test_tabserve_serve_refuses_an_unknown_provider_before_starting(tmp_path: Path):
    env = {**os.environ, "TABSERVE_EXECUTION_PROVIDERS": "CUDA", "TABSERVE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tabserve", "serve", "--no-pretrain", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "unknown execution provider 'CUDA'" in done.stderr and "CUDAExecutionProvider" in done.stderr
