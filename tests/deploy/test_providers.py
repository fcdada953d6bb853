"""TABSERVE_EXECUTION_PROVIDERS: which onnxruntime providers a server asks for, the CPU fallback when a GPU
provider is missing, the refusal of unknown names, and the one log line naming the provider really used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

import tabserve
from tabserve.core import runtime
from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model
from tabserve.core.runtime import CPU, RuntimeOptions, select_providers
from tabserve.errors import ConfigError

CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_BUILD = [TRT, CUDA, CPU]  # what onnxruntime-gpu reports, GPU or not


def _cuda_works(bundle: Path) -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    return Model.from_bundle(read_bundle(bundle), RuntimeOptions(providers=(CUDA, CPU))).runtime.providers[0] == CUDA


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
    if _cuda_works(demo_bundle):
        pytest.skip("a GPU is visible: the fallback is only observable without one")
    model = Model.from_bundle(read_bundle(demo_bundle), RuntimeOptions(providers=(CUDA, CPU)))
    assert model.runtime.providers == (CPU,)
    reference = tabserve.load(demo_bundle)
    row = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    assert model.predict(row).tolist() == reference.predict(row).tolist()


def test_the_server_logs_the_provider_really_used_once_per_model(demo_bundle: Path, capfd):
    settings = tabserve.Settings(model_path=demo_bundle, access_log=False,
                                 execution_providers=f"{TRT},{CUDA},{CPU}")
    with TestClient(tabserve.create_app(settings)) as client:
        deadline = time.monotonic() + 60  # a CUDA provider's first session takes ~0.5 s (H100)
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        response = client.post("/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]})
        assert response.status_code == 200
    out = capfd.readouterr().out.splitlines()
    # onnxruntime prints a banner when TensorRT's libraries are missing and it retries without it: that text
    # belongs in the JSON line's note, never loose on stdout
    assert all(line.startswith(("{", "tabserve:")) for line in out if line.strip()), out
    lines = [json.loads(line) for line in out if line.startswith("{")]
    provider_lines = [line for line in lines if line.get("event") == "execution_provider"]
    assert len(provider_lines) == 1, lines
    expected = CUDA if _cuda_works(demo_bundle) else CPU
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


def _linear_bundle(tmp_path: Path) -> Path:
    import numpy as np
    import pandas as pd

    from tabserve.training import train_file

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    frame = pd.DataFrame(x, columns=[f"feature_{i}" for i in range(5)]).assign(target=x @ [1.0, 2, 3, 4, 5])
    frame.to_csv(tmp_path / "linear.csv", index=False)
    return train_file(tmp_path / "linear.csv", "target", estimator="linear", dest=tmp_path / "linear").path


def test_only_auto_lets_tabserve_choose_the_placement():
    assert RuntimeOptions.resolve(1, "auto").auto and RuntimeOptions.resolve(1, " Auto ").auto
    assert not RuntimeOptions.resolve(1, f"{CUDA},{CPU}").auto and not RuntimeOptions().auto


def test_auto_keeps_a_tree_ensemble_on_the_cpu_and_says_why(demo_bundle: Path):
    """The demo forest's TreeEnsemble has no CUDA kernel: with "auto" the whole model runs on the CPU (no
    copies between devices), with a note for the log line. Without a GPU the same probe lands on the CPU."""
    model = Model.from_bundle(read_bundle(demo_bundle), RuntimeOptions(providers=(CUDA, CPU), auto=True))
    assert model.runtime.providers == (CPU,)
    assert "cannot run the whole graph" in model.runtime.placement_note and CUDA in model.runtime.placement_note
    row = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    assert model.predict(row).tolist() == tabserve.load(demo_bundle).predict(row).tolist()
    explicit = Model.from_bundle(read_bundle(demo_bundle), RuntimeOptions(providers=(CUDA, CPU)))
    assert explicit.runtime.placement_note is None  # an explicit list is obeyed as it is


def test_auto_puts_a_graph_the_gpu_runs_whole_on_the_gpu(tmp_path: Path):
    bundle = _linear_bundle(tmp_path)
    if not _cuda_works(bundle):
        pytest.skip("needs a visible GPU and onnxruntime-gpu")
    model = Model.from_bundle(read_bundle(bundle), RuntimeOptions(providers=(CUDA, CPU), auto=True,
                                                                  batch_threads=0))
    assert model.runtime.providers[0] == CUDA and model.runtime.placement_note is None
    model.runtime.build_batch_session()
    assert model.runtime.batch_session.get_providers()[0] == CUDA
    cpu = Model.from_bundle(read_bundle(bundle))
    x = [[0.1 * i + j for i in range(5)] for j in range(300)]
    assert model.predict(x) == pytest.approx(cpu.predict(x), rel=1e-9)


def test_a_provider_that_fails_to_start_is_left_out_with_a_note(demo_bundle: Path, monkeypatch, capsys):
    """TensorRT listed by onnxruntime-gpu but without its libraries (the CUDA image): tabserve leaves it out and
    says why, with onnxruntime's own retry (and the banner it prints to stdout) turned off."""
    real = ort.InferenceSession
    calls = []

    def session(model, sess_options=None, providers=(), **kwargs):
        calls.append((list(providers), kwargs))
        if providers[0] == TRT:
            raise RuntimeError("RegisterTensorRTPluginsAsCustomOps: Please install TensorRT libraries\nmore")
        return real(model, sess_options=sess_options, providers=[p for p in providers if p == CPU], **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", session)
    model = Model.from_bundle(read_bundle(demo_bundle), RuntimeOptions(providers=(TRT, CPU)))
    assert model.runtime.providers == (CPU,)
    assert model.runtime.placement_note == (f"{TRT} failed to start (RegisterTensorRTPluginsAsCustomOps: Please "
                                            "install TensorRT libraries), so it was left out")
    assert calls == [([TRT, CPU], {"enable_fallback": 0}), ([CPU], {"enable_fallback": 0})]
    assert capsys.readouterr().out == ""


class _Off:
    """A session whose float outputs are off by ``rel`` (relative), like CUDA's double Softmax (1e-6)."""

    def __init__(self, session, rel: float) -> None:
        self.session, self.rel = session, rel
        self.get_inputs, self.get_outputs = session.get_inputs, session.get_outputs

    def run(self, names, feed):
        return [o * (1 + self.rel) if o.dtype.kind == "f" else o for o in self.session.run(names, feed)]


def test_auto_compares_the_gpu_answers_with_the_cpu_ones_within_the_bundle_tolerance(demo_bundle: Path):
    bundle = read_bundle(demo_bundle)
    cpu = Model.from_bundle(bundle).runtime.session
    assert runtime._disagreement(cpu, cpu, bundle.manifest) is None
    assert runtime._disagreement(_Off(cpu, 1e-12), cpu, bundle.manifest) is None  # within rtol 1e-9
    why = runtime._disagreement(_Off(cpu, 1e-6), cpu, bundle.manifest)
    assert "differs from the CPU by up to 1e-06" in why and "rtol 1e-09" in why and "training ranges" in why


def test_auto_never_serves_gpu_answers_outside_the_parity_tolerance(iris_bundle: Path):
    """A multiclass logistic model (iris) ends in Softmax: with "auto" it serves either from the GPU within the
    bundle's tolerance of the CPU's answers, or from the CPU with a note that says why."""
    if not _cuda_works(iris_bundle):
        pytest.skip("needs a visible GPU and onnxruntime-gpu")
    bundle = read_bundle(iris_bundle)
    auto = Model.from_bundle(bundle, RuntimeOptions(providers=(CUDA, CPU), auto=True))
    if auto.runtime.providers[0] == CPU:
        assert "differs from the CPU" in auto.runtime.placement_note or "whole graph" in auto.runtime.placement_note
    else:
        x = np.random.default_rng(1).uniform(0, 8, size=(500, 4))
        np.testing.assert_allclose(auto.predict_proba(x), Model.from_bundle(bundle).predict_proba(x),
                                   rtol=bundle.manifest.parity.rtol, atol=bundle.manifest.parity.atol)
