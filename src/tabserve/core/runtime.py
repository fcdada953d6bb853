"""One onnxruntime session per model version, checked against its manifest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from tabserve.core.manifest import Manifest
from tabserve.core.schema import ModelInput
from tabserve.core.tensor_route import TENSOR_MIN_ROWS
from tabserve.errors import BundleError, ConfigError

if TYPE_CHECKING:  # the options are read from it; core never imports the settings at run time
    from tabserve.settings import Settings

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


CPU = "CPUExecutionProvider"
AUTO = "auto"
# What "auto" tries, in order. TensorRT is opt-in: it needs its own libraries (not in the CUDA image), builds
# an engine per input shape at first use, and has no tree-ensemble operator (those nodes run on CPU anyway).
AUTO_ORDER = ("CUDAExecutionProvider", CPU)


def select_providers(spec: str | Sequence[str], available: Sequence[str] | None = None) -> tuple[str, ...]:
    """The execution providers to ask onnxruntime for, best first, always ending with the CPU one.

    ``spec`` is ``"auto"`` (CUDA when this onnxruntime build has it, then CPU; per model, ``placement`` then
    keeps on the CPU a graph the GPU cannot run whole or exactly) or provider names in order of
    preference (a comma-separated string or a sequence). A name onnxruntime does not know raises
    ``ConfigError``; a known one this build lacks (CUDA with the CPU package) is skipped, so the same
    configuration runs on machines with and without a GPU. Whether a GPU is really visible is only known once
    a session exists: ``OnnxRuntime.providers`` says what a session really uses.
    """
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise ConfigError("execution providers: empty list; use 'auto' or names such as "
                          "'CUDAExecutionProvider,CPUExecutionProvider'")
    have = set(ort.get_available_providers() if available is None else available)
    if [n.lower() for n in names] == [AUTO]:
        names = list(AUTO_ORDER)
    else:
        known = ort.get_all_providers()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown execution provider {unknown[0]!r}; onnxruntime knows {', '.join(known)} "
                              f"(this installation has {', '.join(sorted(have))}), or use 'auto'",
                              provider=unknown[0])
    chosen = [n for n in dict.fromkeys(names) if n in have and n != CPU]
    return (*chosen, CPU)


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = (CPU,)
    # Batches of at least ``batch_min_rows`` rows run on a second session with ``batch_threads`` onnxruntime
    # threads (0 = onnxruntime's default) when that differs from ``intra_op_threads``. Measured (100-tree forest,
    # 1000 rows, 2 cores): 12.2 ms with 1 thread, 6.7 ms with the default, which pins its own threads to every
    # core even under taskset (13.0 ms of CPU time): faster batches, not more of them. Off by default.
    batch_threads: int = 1
    batch_min_rows: int = 64
    # Batches of at least ``tensor_min_rows`` rows run on a tree model's tensor graph on the GPU, when "auto" placed
    # it there whole (core/tensor_route.py: why 2048); 0: never.
    tensor_min_rows: int = TENSOR_MIN_ROWS
    # The providers came from "auto": a graph the GPU cannot run whole stays on the CPU (``placement``).
    auto: bool = False

    @classmethod
    def resolve(cls, intra_op_threads: int = 1, providers: str | Sequence[str] = AUTO, *, batch_threads: int = 1,
                batch_min_rows: int = 64, tensor_min_rows: int = TENSOR_MIN_ROWS) -> RuntimeOptions:
        """Options for a server: ``providers`` as ``TABSERVE_EXECUTION_PROVIDERS`` gives them."""
        auto = isinstance(providers, str) and providers.strip().lower() == AUTO
        return cls(intra_op_threads=intra_op_threads, providers=select_providers(providers),
                   batch_threads=batch_threads, batch_min_rows=batch_min_rows, auto=auto,
                   tensor_min_rows=tensor_min_rows)

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeOptions:
        """The server's options, the same for the first load, a reload, a pinned version and the preload.
        Batches over the inline size take the batch session (they run off the event loop anyway)."""
        return cls.resolve(settings.intra_op_threads, settings.execution_providers,
                           batch_threads=settings.batch_intra_op_threads,
                           batch_min_rows=settings.inline_max_rows + 1,
                           tensor_min_rows=settings.tensor_min_rows)


class OnnxRuntime:
    """Runs ``model.onnx``; ``run(x)`` returns the outputs the manifest names, in its order."""

    def __init__(self, onnx_bytes: bytes, manifest: Manifest, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        providers, notes = placement(onnx_bytes, options, manifest)
        options = replace(options, providers=providers, auto=False)
        self.session = _session(onnx_bytes, manifest, options, options.intra_op_threads, notes)
        # Why the session's providers differ from those asked for, when tabserve or onnxruntime knows: for the
        # log line that names the provider really used.
        self.placement_note = "; ".join(notes) or None
        self.batch_session = self.session  # until build_batch_session() replaces it
        self.batch_min_rows = options.batch_min_rows
        self.tensor: Any = None  # a TensorRoute for large batches on a GPU (core/tensor_route.py), set by Model
        self._batch_source: tuple[bytes, Manifest, RuntimeOptions] | None = None
        if options.batch_threads != options.intra_op_threads:
            self._batch_source = (onnx_bytes, manifest, options)
        # What the session really uses: a CUDA provider asked for but with no GPU visible is dropped here.
        self.providers: tuple[str, ...] = tuple(self.session.get_providers())
        self.numeric_name: str | None = None
        self.categorical_name: str | None = None
        self.input_dtype: np.dtype[Any] = np.dtype(np.float64)
        self._check_inputs(manifest)
        self.output_names = self._check_outputs(manifest)

    def build_batch_session(self) -> None:
        """Build the large-batch session, if the options ask for one. Servers call it after the version is
        serving, so that it does not delay readiness (cold start); until then batches use the first session."""
        source, self._batch_source = self._batch_source, None
        if source is not None:
            onnx_bytes, manifest, options = source
            self.batch_session = _session(onnx_bytes, manifest, options, options.batch_threads, spin=False)

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
        if self.tensor is not None and self.tensor.takes(x):
            return self.tensor.run(self.output_names, x)  # type: ignore[no-any-return]
        if isinstance(x, np.ndarray):
            return (self.batch_session if len(x) >= self.batch_min_rows else self.session).run(
                self.output_names, {self.numeric_name: x})
        feed: dict[str, np.ndarray] = {self.categorical_name: x.categorical}  # type: ignore[dict-item]
        if x.numeric is not None:
            feed[self.numeric_name] = x.numeric  # type: ignore[index]
        return (self.batch_session if len(x) >= self.batch_min_rows else self.session).run(self.output_names, feed)


def placement(onnx_bytes: bytes, options: RuntimeOptions, manifest: Manifest) -> tuple[tuple[str, ...], list[str]]:
    """The providers a session gets, and why they differ from ``options.providers`` when they do.

    With "auto", a model goes on the GPU only when the GPU runs its whole graph and gives the CPU's answers.
    Tree ensembles (``ai.onnx.ml``) and text have CPU kernels only: in a CUDA session they run on the CPU anyway,
    and every call pays the copies between the devices. Measured on an H100 (docs/deployment.md): one row of the
    demo forest took 48.7 us with CUDA and 8.9 us without, and no batch size from 16 to 65,536 rows gained.
    The first test is onnxruntime's own placement: a session on the GPU provider alone, with the CPU fallback
    disabled, fails to build when any node would need the CPU (or when no GPU is visible). The second compares
    the GPU's outputs with the CPU's on rows drawn from the training ranges, within the bundle's parity
    tolerance: CUDA's double Softmax, for one, is off by up to 1e-6 relative (measured). An explicit provider
    list is obeyed as it is.
    """
    gpu = options.providers[0]
    if not options.auto or gpu == CPU:
        return options.providers, []
    so = ort.SessionOptions()
    so.log_severity_level = 4  # the refusal is the answer, not an error to print
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        on_gpu = _create(onnx_bytes, so, (gpu,), [])
    except Exception:  # noqa: BLE001 - onnxruntime's Fail: some node, or every node, needs the CPU
        why = (f"auto: {gpu} cannot run the whole graph (a node without a kernel there, such as a tree ensemble "
               "or text, or no GPU visible), so the model runs on the CPU")
        return (CPU,), [why]
    try:
        differs = _disagreement(on_gpu, _create(onnx_bytes, ort.SessionOptions(), (CPU,), []), manifest)
    except Exception as exc:  # noqa: BLE001 - the CPU session, if it is the cause, raises again below
        differs = f"could not be compared with the CPU ({type(exc).__name__}: {exc})"
    if differs:
        return (CPU,), [f"auto: {gpu} {differs}, so the model runs on the CPU"]
    return options.providers, []


def training_range_rows(manifest: Manifest, n: int, dtype: np.dtype[Any], seed: int = 0) -> np.ndarray:
    """``n`` rows of the numeric features, each drawn uniformly inside its training range (the manifest's
    min and max; [-1, 1] where it recorded none)."""
    stats = [f.stats for f in manifest.features_of("numeric")]
    low = np.array([s.min if s is not None else -1.0 for s in stats])
    high = np.array([s.max if s is not None else 1.0 for s in stats])
    return (low + (high - low) * np.random.default_rng(seed).random((n, len(stats)))).astype(dtype)


def _disagreement(on_gpu: ort.InferenceSession, on_cpu: ort.InferenceSession, manifest: Manifest,
                  n_rows: int = 256) -> str | None:
    """How the GPU's outputs differ from the CPU's beyond the bundle's parity tolerance, or None."""
    if len(on_gpu.get_inputs()) != 1:  # only text adds an input, and text never runs whole on a GPU
        return "runs a graph with several inputs, which this check does not feed"
    node = on_gpu.get_inputs()[0]
    x = training_range_rows(manifest, n_rows, _ORT_TYPES[node.type])
    rtol, atol = (manifest.parity.rtol, manifest.parity.atol) if manifest.parity else (1e-9, 1e-12)
    for name, a, b in zip([o.name for o in on_cpu.get_outputs()], on_cpu.run(None, {node.name: x}),
                          on_gpu.run(None, {node.name: x}), strict=True):
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return f"gives other values of {name!r} than the CPU on {n_rows} rows in the training ranges"
        elif not np.allclose(a, b, rtol=rtol, atol=atol):
            worst = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), np.finfo(np.float64).tiny)))
            return (f"differs from the CPU by up to {worst:.2g} (relative) in {name!r} on {n_rows} rows in the "
                    f"training ranges, over the bundle's parity tolerance (rtol {rtol:g}, atol {atol:g})")
    return None


def _create(onnx_bytes: bytes, so: ort.SessionOptions, providers: Sequence[str],
            notes: list[str]) -> ort.InferenceSession:
    """A session on ``providers``; one that fails to start (TensorRT without its libraries, a CUDA out of memory)
    is left out, with a note, and the next ones tried.

    onnxruntime's own retry is turned off (``enable_fallback=0``, which 1.31 and 1.32 read; 1.21 does not): it
    prints a banner to stdout, which would break the JSON log stream, and retries with a list of its choosing.
    """
    left = list(providers)
    while True:
        try:
            return ort.InferenceSession(onnx_bytes, sess_options=so, providers=left, enable_fallback=0)
        except Exception as exc:
            if len(left) == 1:
                raise
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            notes.append(f"{left[0]} failed to start ({reason}), so it was left out")
            left = left[1:]


def _session(onnx_bytes: bytes, manifest: Manifest, options: RuntimeOptions, threads: int,
             notes: list[str] | None = None, spin: bool = True) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if not spin:  # idle pool threads sleep instead of spinning: the event loop may share their core
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return _create(onnx_bytes, so, options.providers, [] if notes is None else notes)
    except Exception as exc:  # onnxruntime raises its own exception types for any bad graph
        raise BundleError(f"onnxruntime cannot load model.onnx of {manifest.name}:{manifest.version}: {exc}") \
            from exc
