"""tabserve: serve tabular models fast and safely. This module is the public API; nothing else is promised."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Bundle",
    "BundleError",
    "DataError",
    "ExportError",
    "InvalidInput",
    "Manifest",
    "Model",
    "ModelNotReady",
    "Prediction",
    "Settings",
    "TabserveError",
    "__version__",
    "create_app",
    "create_router",
    "load",
    "read_bundle",
    "write_bundle",
]

from tabserve.errors import BundleError, DataError, ExportError, InvalidInput, ModelNotReady, TabserveError

if TYPE_CHECKING:
    import os

    from tabserve.api.app import create_app, create_router
    from tabserve.core.bundle import Bundle, read_bundle, write_bundle
    from tabserve.core.manifest import Manifest
    from tabserve.core.model import Model, Prediction
    from tabserve.settings import Settings

# Where each public name lives. They are imported at their first use, so that `import tabserve` costs nothing
# (numpy and onnxruntime come with Model, pydantic with Settings, FastAPI with create_app), and neither does
# `import tabserve.cli`: `tabserve --help` answers without loading any of them.
_EXPORTS = {
    "Bundle": "tabserve.core.bundle", "read_bundle": "tabserve.core.bundle", "write_bundle": "tabserve.core.bundle",
    "Manifest": "tabserve.core.manifest",
    "Model": "tabserve.core.model", "Prediction": "tabserve.core.model",
    "Settings": "tabserve.settings",
    "create_app": "tabserve.api.app", "create_router": "tabserve.api.app",
}


def load(path: str | os.PathLike[str], *, intra_op_threads: int = 1, home: str | os.PathLike[str] | None = None
         ) -> Model:
    """Load and verify a bundle (hash, manifest, ONNX inputs/outputs): a bundle folder, or a registry version
    ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (downloaded into ``home``'s cache, default
    ``$TABSERVE_HOME``, from ``MLFLOW_TRACKING_URI`` or the embedded store). Raises ``BundleError``."""
    from pathlib import Path

    from tabserve.core.model import load as load_bundle
    from tabserve.registry import is_registry_uri, local_bundle

    if is_registry_uri(path):
        path = local_bundle(path, home=Path(home) if home is not None else None)
    return load_bundle(path, intra_op_threads=intra_op_threads)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tabserve' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # once: the next lookup finds it without calling this
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
