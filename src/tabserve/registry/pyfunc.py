"""MLflow's ``python_function`` flavor for a registered tabserve bundle: ``mlflow.pyfunc.load_model(
"models:/NAME@champion")`` and ``mlflow models serve`` run the very bundle tabserve serves.

``training.publish`` names this module as the flavor's ``loader_module`` and ``bundle/`` as its data. Loading
reads the bundle with tabserve's own checks (sha256, manifest, ONNX inputs and outputs) and runs it with
onnxruntime: nothing is unpickled, and nothing heavier than tabserve's core (numpy, onnxruntime) is imported
until a DataFrame must be built.

``predict`` takes a pandas DataFrame with the model's feature columns (extra columns are ignored) or a dict of
columns (MLflow checks either against the signature's named columns first), and answers what ``tabserve.load(bundle).predict``
answers: the predicted values of a regressor, the labels of a classifier. With ``params={"output":
"probabilities"}`` a classifier answers a DataFrame with one column per class instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tabserve.core.manifest import MANIFEST_FILE
from tabserve.core.model import Model, load
from tabserve.errors import InvalidInput

__all__ = ["OUTPUT_LABELS", "OUTPUT_PARAM", "OUTPUT_PROBABILITIES", "BundlePyfunc"]

OUTPUT_PARAM = "output"
OUTPUT_LABELS = "predictions"
OUTPUT_PROBABILITIES = "probabilities"


class BundlePyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: one verified bundle and its onnxruntime session."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        output = (params or {}).get(OUTPUT_PARAM) or OUTPUT_LABELS
        rows = _frame(model_input) if isinstance(model_input, dict) else model_input
        if output == OUTPUT_LABELS:
            return self.model.predict(rows)
        if output == OUTPUT_PROBABILITIES:
            import pandas as pd

            proba = self.model.predict_proba(rows)
            return pd.DataFrame(proba, columns=[str(c) for c in self.model.classes or range(proba.shape[1])])
        raise InvalidInput(f"params {{'{OUTPUT_PARAM}': {output!r}}}: expected {OUTPUT_LABELS!r} (values or "
                           f"labels) or {OUTPUT_PROBABILITIES!r} (class probabilities)")


def _load_pyfunc(path: str | os.PathLike[str], model_config: Any = None) -> BundlePyfunc:
    """MLflow's entry point: ``path`` is the flavor's data, the ``bundle/`` folder (or the model folder)."""
    folder = Path(path)
    if not (folder / MANIFEST_FILE).is_file() and (folder / "bundle" / MANIFEST_FILE).is_file():
        folder = folder / "bundle"
    return BundlePyfunc(load(folder))


def _frame(columns: dict[str, Any]) -> Any:
    import pandas as pd

    if all(np.ndim(v) == 0 for v in columns.values()):  # one row given as {column: value}
        return pd.DataFrame([columns])
    return pd.DataFrame(columns)
