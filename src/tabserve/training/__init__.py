"""Train a tabular model, export it to ONNX, prove parity and write a bundle (needs ``tabserve[train]``).

The names below load scikit-learn, skl2onnx and pandas on first use, so that ``tabserve.training.options``
(what ``tabserve train --help`` shows) imports without them, and a missing extra gives one clear message.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tabserve.training.options import ESTIMATORS, TASKS

if TYPE_CHECKING:
    from tabserve.training.estimators import make_pipeline
    from tabserve.training.export import ExportedModel, export_onnx
    from tabserve.training.importer import ImportResult, import_model
    from tabserve.training.parity import Parity, Verified, export_verified
    from tabserve.training.trainer import Progress, TrainResult, train_demo, train_file

__all__ = [
    "ESTIMATORS",
    "TASKS",
    "ExportedModel",
    "ImportResult",
    "Parity",
    "Progress",
    "TrainResult",
    "Verified",
    "export_onnx",
    "export_verified",
    "import_model",
    "make_pipeline",
    "train_demo",
    "train_file",
]

_LAZY = {
    "make_pipeline": "estimators",
    "ExportedModel": "export",
    "export_onnx": "export",
    "ImportResult": "importer",
    "import_model": "importer",
    "Parity": "parity",
    "Verified": "parity",
    "export_verified": "parity",
    "Progress": "trainer",
    "TrainResult": "trainer",
    "train_demo": "trainer",
    "train_file": "trainer",
}
TRAIN_EXTRA = ("sklearn", "skl2onnx", "onnx", "pandas", "pyarrow")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tabserve.training' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(f"tabserve.training.{module}"), name)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA:
            raise
        raise ModuleNotFoundError(
            f"training needs scikit-learn, skl2onnx, onnx, pandas and pyarrow, and {missing!r} is not "
            "installed: pip install 'tabserve[train]'",
            name=exc.name,
        ) from exc
