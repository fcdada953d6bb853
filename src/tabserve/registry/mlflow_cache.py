"""The local copies of registered versions in ``HOME/cache/mlflow/NAME/VERSION``: a download is checked before it
is renamed into place, and a copy is reused only while it still reads as the bundle the registry records."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from tabserve.core.bundle import read_bundle
from tabserve.errors import BundleError
from tabserve.registry import ResolvedVersion

__all__ = ["check_download", "swap_in", "valid_copy"]


def valid_copy(folder: Path, sha256: str | None) -> bool:
    """A cached bundle is reused when it still reads as a bundle and is the one the registry records."""
    if not folder.is_dir():
        return False
    try:
        bundle = read_bundle(folder)
    except BundleError:
        return False
    return sha256 is None or bundle.manifest.model.sha256 == sha256


def check_download(folder: Path, sha256: str | None, resolved: ResolvedVersion) -> None:
    try:
        bundle = read_bundle(folder)
    except BundleError as exc:
        raise BundleError(f"model {resolved.name!r} version {resolved.version} is not a valid tabserve "
                          f"bundle: {exc}", path=str(folder)) from exc
    if sha256 is not None and bundle.manifest.model.sha256 != sha256:
        raise BundleError(f"model {resolved.name!r} version {resolved.version}: the downloaded model.onnx "
                          f"has sha256 {bundle.manifest.model.sha256} but the registry records {sha256}; the "
                          "artifacts were changed after registration", path=str(folder))


def swap_in(bundle: Path, cache: Path, sha256: str | None) -> None:
    """Rename the verified download into place; a stale copy is moved aside first, and a valid copy that
    another process renamed in meanwhile is kept."""
    if valid_copy(cache, sha256):  # another worker of the same server got there first: it may be reading it
        return
    stale = cache.parent / f".{cache.name}.stale.{uuid.uuid4().hex}"
    if cache.exists():
        cache.rename(stale)
    try:
        bundle.rename(cache)
    except OSError:
        if not valid_copy(cache, sha256):
            raise
    finally:
        shutil.rmtree(stale, ignore_errors=True)
