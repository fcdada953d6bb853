"""The tensor graph of a tree model, checked as model.onnx is: on the same parity and adversarial rows.

Built at every exact export of a model with trees (``convert.tensor_graph``). Measured (benchmarks/tensor_trees.py,
docs/deployment.md; a loaded 2-core machine): building and checking it adds 1-3 s to an export for the demo
forest, 500 LightGBM or 300 XGBoost trees, next to their training and the rest of the export, and the file is
0.9-3.2 times model.onnx, so it is not opt-in. It is left out where it would
not help or cannot be exact: a model without a ``TreeEnsemble``, an approximate (skl2onnx) export, a graph over
``tensor_graph.MAX_BYTES``, or one that misses the parity bounds or a label (which would be a bug: the tests
hold it to model.onnx bit for bit). Leaving it out costs nothing but GPU speed; model.onnx serves as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from tabserve.core.manifest import Feature
from tabserve.training.convert.tensor_graph import tensor_model
from tabserve.training.export import EXPORTER, ExportedModel

if TYPE_CHECKING:
    from tabserve.training.parity import Outputs, Parity


class TensorCheck(NamedTuple):
    """What ``write_bundle(tensor=...)`` takes: the graph, and its manifest section but file and hash."""

    onnx_bytes: bytes
    manifest: dict[str, Any]


def check_tensor(exported: ExportedModel, rows: pd.DataFrame, features: Sequence[Feature], expected: Outputs,
                 labels: Sequence[int | str], cpu: Parity) -> TensorCheck | None:
    """The tensor graph of ``exported`` when it has one that reproduces ``expected`` (the model's outputs on
    ``rows``) within ``cpu``'s bounds with identical labels; ``cpu``: model.onnx's parity on the same rows."""
    from tabserve.training.parity import compare, onnx_outputs  # parity imports this module

    if exported.exporter != EXPORTER:
        return None
    try:
        tensor = tensor_model(exported.onnx_bytes)
        if tensor is None:
            return None
        actual = onnx_outputs(replace(exported, onnx_bytes=tensor.onnx_bytes), rows, features)
    except Exception as exc:  # noqa: BLE001 - an optional file: a fault here must not fail a verified export
        warnings.warn(f"no model.tensor.onnx: building or running it failed ({type(exc).__name__}: {exc}); "
                      "model.onnx is unaffected", RuntimeWarning, stacklevel=2)
        return None
    parity = compare(expected, actual, labels, rtol=cpu.rtol, atol=cpu.atol)
    if not parity.passed:
        return None
    parity = replace(parity, adversarial_rows=cpu.adversarial_rows, probes=cpu.probes)
    section = {k: v for k, v in tensor.manifest().items() if k != "file"}
    return TensorCheck(tensor.onnx_bytes, {**section, "parity": parity.manifest()})


__all__ = ["TensorCheck", "check_tensor"]
