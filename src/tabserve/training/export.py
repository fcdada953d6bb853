"""Fitted model -> ONNX. ``export_onnx`` is the one place that chooses the converter: swap it there.

The exporter is tabserve's exact one (``tabserve.training.convert``): double input, double arithmetic in
scikit-learn's order, float32 only where the model itself rounds to float32. ``export_skl2onnx`` is
kept as an explicit fallback for a model with no exact converter (a Gaussian process...): its float32
graph agrees to about 1e-4, not 1e-9, its float64 graph closer, and a caller must ask for it
(``tabserve import --approximate``: ``export_approximate``), which records the error it measured.
Nothing chooses it automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.helper import tensor_dtype_to_np_dtype

from tabserve import __version__
from tabserve.core.manifest import Task
from tabserve.errors import ExportError
from tabserve.training.convert import FeatureSpec, export_exact

EXPORTER = f"tabserve-exact {__version__}"
# Opsets of the fallback graph: what every onnxruntime the serving install allows (>= 1.18) runs.
SKL2ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True, slots=True)
class ExportedModel:
    onnx_bytes: bytes
    input: dict[str, Any] | None  # the manifest's ``input``: the numeric features (None if there are none)
    outputs: list[dict[str, Any]]  # the manifest's ``outputs``: name, dtype and shape of each graph output
    exporter: str
    categorical_input: dict[str, Any] | None = None  # the manifest's ``categorical_input``: string features

    @property
    def feeds(self) -> dict[str, str]:
        """Graph input name per feature kind."""
        return {kind: spec["name"] for kind, spec in (("numeric", self.input),
                                                       ("categorical", self.categorical_input)) if spec}


def feature_specs(features: Sequence[Any] | int) -> list[FeatureSpec]:
    """Features as the converters need them: from names and kinds (manifest ``Feature``s, dicts, or a
    count of numeric features ``x0..x{n-1}``)."""
    if isinstance(features, int):
        return [FeatureSpec(f"x{i}") for i in range(features)]
    specs = []
    for f in features:
        name, kind = (f["name"], f.get("kind", "numeric")) if isinstance(f, dict) else (f.name, f.kind)
        # NaN reaches the graph only in features that allow it (the server refuses it elsewhere)
        allow_missing = f.get("allow_missing", True) if isinstance(f, dict) else getattr(f, "allow_missing", True)
        specs.append(FeatureSpec(name, kind, bool(allow_missing)))
    return specs


def export_onnx(model: Any, features: Sequence[Any] | int, task: Task) -> ExportedModel:
    """Convert a fitted model or pipeline to one ONNX graph that reproduces it in double precision.

    Inputs: ``X`` (float64 ``[N, F_num]``, the numeric features in manifest order) and/or ``X_cat``
    (string ``[N, F_cat]``). Outputs: ``prediction`` (float64 ``[N]``), or ``label`` and
    ``probabilities`` (float64 ``[N, K]``). Raises ``ExportError`` for an unsupported step.
    """
    exact = export_exact(model, feature_specs(features), task)
    return ExportedModel(exact.onnx_bytes, exact.input, exact.outputs, EXPORTER, exact.categorical_input)


def export_approximate(model: Any, features: Sequence[Any] | int, task: Task) -> ExportedModel:
    """``--approximate``: skl2onnx's graph for a model the exact exporter refuses, in double where skl2onnx
    converts every step in double, else in float32. Its error is measured by the parity check and recorded,
    never assumed. Numeric features only: skl2onnx's text encoders differ from scikit-learn's handling."""
    specs = feature_specs(features)
    text = [f.name for f in specs if f.kind != "numeric"]
    if text:
        raise ExportError(f"--approximate converts with skl2onnx, which tabserve feeds numeric features only; "
                          f"{', '.join(map(repr, text[:5]))} hold text: encode them in the pipeline's exact "
                          "steps, or drop them")
    try:
        return export_skl2onnx(model, len(specs), task, double=True)
    except ExportError:
        return export_skl2onnx(model, len(specs), task)


def export_skl2onnx(model: Any, n_features: int, task: Task, *, double: bool = False) -> ExportedModel:
    """The fallback: skl2onnx's float32 graph (input ``X`` float32 ``[N, n_features]``, no ZipMap), or with
    ``double`` its float64 one (input ``X`` float64; skl2onnx refuses a step it has no double converter for).

    StandardScaler steps of the float32 graph scale in double (skl2onnx's ``div_cast``) with their exact
    float64 constants.
    """
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]
    scalers = [s for s in steps if isinstance(s, StandardScaler)]
    options: dict[int, dict[str, Any]] = {} if double else {id(s): {"div": "div_cast"} for s in scalers}
    if task == "classification":
        options[id(steps[-1])] = {"zipmap": False}
    try:
        tensor_type = DoubleTensorType if double else FloatTensorType
        onnx_model = convert_sklearn(model, name="tabserve", initial_types=[("X", tensor_type([None, n_features]))],
                                     target_opset=SKL2ONNX_OPSET, options=options)
    except Exception as exc:  # skl2onnx raises many types for unsupported models
        raise ExportError(f"skl2onnx {skl2onnx.__version__} cannot convert "
                          f"{' + '.join(type(s).__name__ for s in steps)}{' in double' if double else ''}: "
                          f"{exc}") from exc
    if not double:
        _exact_constants(onnx_model.graph, scalers)
    dtype = "float64" if double else "float32"
    return ExportedModel(onnx_model.SerializeToString(), {"name": "X", "dtype": dtype, "shape": [None, n_features]},
                         _graph_outputs(onnx_model.graph, task), f"skl2onnx {skl2onnx.__version__} ({dtype})")


def _exact_constants(graph: Any, scalers: list[Any]) -> None:
    """skl2onnx's ``div_cast`` stores a scaler's mean and scale rounded to float32: put back the float64 ones
    (found by value; a constant named differently is left as it is)."""
    exact = {}
    for scaler in scalers:
        for values in (scaler.mean_, scaler.scale_):
            if values is not None:
                exact[np.asarray(values, dtype=np.float32).tobytes()] = np.asarray(values, dtype=np.float64)
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.DOUBLE:
            rounded = numpy_helper.to_array(init).astype(np.float32).tobytes()
            if rounded in exact:
                init.CopyFrom(numpy_helper.from_array(exact[rounded], init.name))


def _graph_outputs(graph: Any, task: Task) -> list[dict[str, Any]]:
    nodes = {o.name: o for o in graph.output}
    roles = ([("prediction", next(iter(nodes)))] if task == "regression"
             else [("label", "label"), ("probabilities", "probabilities")])  # skl2onnx's names without ZipMap
    specs = []
    for role, name in roles:
        node = nodes.get(name)
        if node is None:
            raise ExportError(f"the exported graph has outputs {', '.join(nodes)}; expected one for {role!r}")
        tensor = node.type.tensor_type
        dtype = np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append({"role": role, "name": node.name,
                      "dtype": "str" if dtype == np.dtype(object) else dtype.name,
                      "shape": [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]})
    return specs
