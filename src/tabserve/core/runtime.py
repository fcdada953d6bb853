"""One onnxruntime session per model version, checked against its manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from tabserve.core.manifest import Manifest
from tabserve.core.schema import ModelInput
from tabserve.errors import BundleError

_ORT_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(string)": np.dtype(object),
    "tensor(bool)": np.dtype(np.bool_),
}


def dtype_name(ort_type: str) -> str:
    dt = _ORT_TYPES.get(ort_type)
    if dt is None:
        return ort_type
    return "str" if dt == np.dtype(object) else dt.name


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class OnnxRuntime:
    """Runs ``model.onnx``; ``run(x)`` returns the outputs the manifest names, in its order."""

    def __init__(self, onnx_bytes: bytes, manifest: Manifest, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(onnx_bytes, sess_options=so, providers=list(options.providers))
        except Exception as exc:  # onnxruntime raises its own exception types for any bad graph
            raise BundleError(f"onnxruntime cannot load model.onnx of {manifest.name}:{manifest.version}: {exc}") \
                from exc
        self.numeric_name: str | None = None
        self.categorical_name: str | None = None
        self.input_dtype: np.dtype[Any] = np.dtype(np.float64)
        self._check_inputs(manifest)
        self.output_names = self._check_outputs(manifest)

    def _check_inputs(self, manifest: Manifest) -> None:
        graph = {i.name: i for i in self.session.get_inputs()}
        expected = {spec.name for spec in (manifest.input, manifest.categorical_input) if spec is not None}
        if set(graph) != expected:
            raise BundleError(f"model.onnx has inputs {sorted(graph)} but tabserve.json describes {sorted(expected)}")
        if manifest.input is not None:
            node = graph[manifest.input.name]
            if node.type not in ("tensor(float)", "tensor(double)"):
                raise BundleError(f"model.onnx input {node.name!r} is {node.type}; float or double is required")
            self._check_tensor(node, manifest.input.dtype, len(manifest.features_of("numeric")))
            self.numeric_name, self.input_dtype = node.name, _ORT_TYPES[node.type]
        if manifest.categorical_input is not None:
            node = graph[manifest.categorical_input.name]
            if node.type != "tensor(string)":
                raise BundleError(f"model.onnx input {node.name!r} is {node.type}; string is required for "
                                  "categorical features")
            self._check_tensor(node, "str", len(manifest.features_of("categorical")))
            self.categorical_name = node.name

    @staticmethod
    def _check_tensor(node: Any, dtype: str, n_features: int) -> None:
        if dtype_name(node.type) != dtype:
            raise BundleError(f"model.onnx input {node.name!r} is {dtype_name(node.type)} but tabserve.json "
                              f"says {dtype}")
        shape = node.shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
            raise BundleError(f"model.onnx input {node.name!r} has shape {shape} but tabserve.json lists "
                              f"{n_features} features for it")

    def _check_outputs(self, manifest: Manifest) -> list[str]:
        graph = {o.name: o for o in self.session.get_outputs()}
        for out in manifest.outputs:
            node = graph.get(out.name)
            if node is None:
                raise BundleError(
                    f"tabserve.json names output {out.name!r} but model.onnx has only {', '.join(graph)}",
                )
            if dtype_name(node.type) != out.dtype:
                raise BundleError(
                    f"model.onnx output {out.name!r} is {dtype_name(node.type)} but tabserve.json says {out.dtype}",
                )
        return [o.name for o in manifest.outputs]

    def run(self, x: ModelInput) -> list[np.ndarray]:
        if isinstance(x, np.ndarray):
            return self.session.run(self.output_names, {self.numeric_name: x})
        feed: dict[str, np.ndarray] = {self.categorical_name: x.categorical}  # type: ignore[dict-item]
        if x.numeric is not None:
            feed[self.numeric_name] = x.numeric  # type: ignore[index]
        return self.session.run(self.output_names, feed)
