"""Large batches of a tree model on the GPU: the bundle's tensor graph (``model.tensor.onnx``) on CUDA.

onnxruntime has no CUDA kernel for ``TreeEnsemble``, so ``auto`` keeps model.onnx of a tree model on the CPU
(``runtime.placement``). The tensor graph computes the same trees with standard operators, bit for bit on the
CPU (checked at export on the parity rows). It is picked only where it can win:

- ``auto`` placement, a GPU provider first, and the tensor graph placed there whole (no node left to the CPU:
  a model reading text keeps its lookup on the CPU, so it is not picked) with the CPU's answers on rows drawn
  from the training ranges (``runtime.placement``, the same test model.onnx gets);
- a batch of at least ``tensor_min_rows`` rows. A GPU step costs a fixed ~100-200 kernel launches (one per
  level and operator, a few microseconds each) whatever the batch, while the CPU TreeEnsemble costs about a
  microsecond a row on 16 cores (the demo forest: 1.25 M rows/s on an H100 machine's cores), so below about
  a thousand rows the CPU wins; 2048 leaves a margin until a GPU run measures the crossover
  (``benchmarks/gpu_trees.py`` prints it). Single rows always take model.onnx on the CPU.

A batch runs in slices of at most ``chunk_rows(trees)`` rows: the traversal holds a few ``[rows, trees]``
tensors at once (int32 slots, double values), and 2**25 of them keep the GPU's working set near a gigabyte.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from tabserve.core.schema import ModelInput

if TYPE_CHECKING:
    from tabserve.core.manifest import Manifest
    from tabserve.core.runtime import RuntimeOptions

TENSOR_MIN_ROWS = 2048
ELEMENTS_PER_SLICE = 1 << 25  # rows x trees of one slice


def chunk_rows(trees: int) -> int:
    return max(1024, ELEMENTS_PER_SLICE // max(trees, 1))


@dataclass
class TensorRoute:
    """The tensor graph's GPU session, and the batches it takes."""

    session: ort.InferenceSession
    min_rows: int
    chunk: int
    input_name: str

    def takes(self, x: ModelInput) -> bool:
        return isinstance(x, np.ndarray) and len(x) >= self.min_rows

    def run(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        if len(x) <= self.chunk:
            return self.session.run(names, {self.input_name: x})  # type: ignore[no-any-return]
        parts = [self.session.run(names, {self.input_name: x[i:i + self.chunk]})
                 for i in range(0, len(x), self.chunk)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]


def tensor_route(tensor_bytes: bytes | None, manifest: Manifest, options: RuntimeOptions | None,
                 notes: list[str] | None = None) -> TensorRoute | None:
    """The GPU route for ``tensor_bytes`` under ``options``, or None where batches stay on model.onnx."""
    from tabserve.core.runtime import CPU, _session, placement  # runtime hooks this module in

    if tensor_bytes is None or options is None or not options.auto or options.providers[0] == CPU:
        return None
    if options.tensor_min_rows <= 0 or manifest.tensor_model is None or not manifest.tensor_model.parity.passed:
        return None
    if manifest.categorical_input is not None:  # text is looked up on the CPU: the graph cannot run whole there
        return None
    providers, why = placement(tensor_bytes, options, manifest)
    if providers[0] == CPU:
        if notes is not None:
            notes.extend(w.replace("the model runs", "batches run") for w in why)
        return None
    # placement built a session on the GPU provider alone: this one runs there too (or, should the GPU fail to
    # start a second time, on the CPU: slower for large batches, and the same answers)
    session = _session(tensor_bytes, manifest, replace(options, providers=providers, auto=False),
                       options.intra_op_threads)
    return TensorRoute(session, options.tensor_min_rows, chunk_rows(manifest.tensor_model.trees),
                       session.get_inputs()[0].name)


__all__ = ["TENSOR_MIN_ROWS", "TensorRoute", "chunk_rows", "tensor_route"]
