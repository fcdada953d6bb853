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

from tabserve.core.bundle import Bundle, read_bundle, write_bundle
from tabserve.core.manifest import Manifest
from tabserve.core.model import Model, Prediction, load
from tabserve.errors import BundleError, DataError, ExportError, InvalidInput, ModelNotReady, TabserveError
from tabserve.settings import Settings

if TYPE_CHECKING:
    from tabserve.api.app import create_app, create_router


def __getattr__(name: str) -> Any:
    # FastAPI is imported only by those who build an app, so `import tabserve` stays light.
    if name in ("create_app", "create_router"):
        from tabserve.api import app

        return getattr(app, name)
    raise AttributeError(f"module 'tabserve' has no attribute {name!r}")
