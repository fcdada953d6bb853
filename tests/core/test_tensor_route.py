"""Which graph scores a batch: with "auto" on a GPU, large batches of a tree model take its tensor graph
(model.tensor.onnx) and single rows model.onnx on the CPU; on a CPU-only machine the tensor graph is never used.

No GPU here: only the provider lists are faked. ``runtime.placement`` answers as it does on a CUDA machine (a
graph with a ``TreeEnsemble`` node stays on the CPU, a graph of standard operators goes to CUDA); the sessions,
the route and the answers are real (onnxruntime's CPU package runs the "CUDA" session on its CPU provider).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest

from tabserve.core import runtime
from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model
from tabserve.core.runtime import CPU, RuntimeOptions
from tabserve.core.tensor_route import TENSOR_MIN_ROWS

CUDA = "CUDAExecutionProvider"


class Counting:
    """A session that counts the rows it scores."""

    def __init__(self, session: Any) -> None:
        self.session, self.rows = session, 0

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        self.rows += len(next(iter(feed.values())))
        return self.session.run(names, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.fixture
def cuda_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    def placement(onnx_bytes: bytes, options: RuntimeOptions, manifest: Any) -> tuple[tuple[str, ...], list[str]]:
        if not options.auto or options.providers[0] == CPU:
            return options.providers, []
        trees = any(n.op_type == "TreeEnsemble" for n in onnx.load_model_from_string(onnx_bytes).graph.node)
        return ((CPU,), ["auto: no CUDA kernel for TreeEnsemble"]) if trees else (options.providers, [])

    monkeypatch.setattr(runtime, "placement", placement)


def _counted(model: Model) -> tuple[Counting, Counting]:
    cpu = Counting(model.runtime.session)
    model.runtime.session = model.runtime.batch_session = cpu
    tensor = Counting(model.runtime.tensor.session)
    model.runtime.tensor.session = tensor
    return cpu, tensor


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_auto_on_a_gpu_sends_large_batches_to_the_tensor_graph(demo_bundle: Any, cuda_machine: None) -> None:
    bundle = read_bundle(demo_bundle)
    reference = Model.from_bundle(bundle, RuntimeOptions())
    model = Model.from_bundle(bundle, RuntimeOptions(providers=(CUDA, CPU), auto=True))
    assert model.runtime.providers == (CPU,)  # model.onnx: its trees have no CUDA kernel
    assert model.runtime.tensor is not None and model.runtime.tensor.min_rows == TENSOR_MIN_ROWS
    cpu, tensor = _counted(model)
    model.warm_up()  # both sessions, before traffic: one row, and one batch on the GPU
    assert (cpu.rows, tensor.rows) == (1, TENSOR_MIN_ROWS)
    cpu.rows = tensor.rows = 0
    rows = np.random.default_rng(0).normal(size=(TENSOR_MIN_ROWS, 5))
    for n in (1, TENSOR_MIN_ROWS - 1, TENSOR_MIN_ROWS):
        np.testing.assert_array_equal(model.predict(rows[:n]), reference.predict(rows[:n]))
    assert cpu.rows == 1 + TENSOR_MIN_ROWS - 1  # the single row and the batch below the threshold
    assert tensor.rows == TENSOR_MIN_ROWS


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_batch_larger_than_a_slice_runs_in_slices(demo_bundle: Any, cuda_machine: None) -> None:
    bundle = read_bundle(demo_bundle)
    model = Model.from_bundle(bundle, RuntimeOptions(providers=(CUDA, CPU), auto=True, tensor_min_rows=10))
    model.runtime.tensor.chunk = 100
    _, tensor = _counted(model)
    rows = np.random.default_rng(1).normal(size=(250, 5))
    np.testing.assert_array_equal(model.predict(rows), Model.from_bundle(bundle).predict(rows))
    assert tensor.rows == 250


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_never_on_a_cpu(demo_bundle: Any, cuda_machine: None) -> None:
    bundle = read_bundle(demo_bundle)
    assert Model.from_bundle(bundle, RuntimeOptions.resolve(1, "auto")).runtime.tensor is None  # no CUDA here
    assert Model.from_bundle(bundle, RuntimeOptions(providers=(CPU,), auto=True)).runtime.tensor is None
    # an explicit provider list is obeyed as it is: model.onnx on it, no second graph
    assert Model.from_bundle(bundle, RuntimeOptions(providers=(CUDA, CPU))).runtime.tensor is None
    off = RuntimeOptions(providers=(CUDA, CPU), auto=True, tensor_min_rows=0)
    assert Model.from_bundle(bundle, off).runtime.tensor is None
