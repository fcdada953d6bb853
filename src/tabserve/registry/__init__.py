"""Where bundles come from: a local folder, or the MLflow model registry (``models:/NAME@alias``).

A ``ModelSource`` answers two questions, so a server can poll cheaply and download only on change:
``resolve()`` says which version a URI points at now; ``fetch(version)`` makes that version's bundle available
as a local folder (which ``tabserve.core.bundle.read_bundle`` then verifies). Three more let a server live
through a broken writer or registry: ``fingerprint()`` changes when the files of the version to serve change
(a failed load is retried then), ``remember(version)`` notes the version served, and ``cached(reason)`` answers
with that version, from a verified local copy, when the registry cannot be reached.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tabserve.core.bundle import resolve_bundle_dir
from tabserve.core.manifest import MANIFEST_FILE
from tabserve.errors import BundleError, ConfigError

MLFLOW_SCHEME = "models:/"
REGISTRY_TIMEOUT_S = 10.0  # the default of Settings.registry_timeout_s

__all__ = ["MLFLOW_SCHEME", "REGISTRY_TIMEOUT_S", "Fingerprint", "LocalSource", "ModelSource", "ResolvedVersion",
           "files_fingerprint", "is_registry_uri", "local_bundle", "open_source", "registered_name", "variant_uri",
           "version_uri"]


Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    """One version a source points at: ``version`` is the registry's version (a path's version folder)."""

    uri: str
    name: str
    version: str
    alias: str | None = None
    # Why the registry's answer was replaced by the last version served from the local cache (None: it answered).
    fallback: str | None = None
    sha256: str | None = None  # of the cached copy's model.onnx, with ``fallback``


class ModelSource(Protocol):
    uri: str

    def resolve(self) -> ResolvedVersion:
        """Which version the URI points at now (one cheap lookup; no download)."""
        ...

    def fetch(self, resolved: ResolvedVersion) -> Path:
        """A local bundle folder holding ``resolved`` (downloaded and cached when remote)."""
        ...

    def fingerprint(self) -> Fingerprint | None:
        """What the files of the version ``resolve`` would take look like now (None: not a local source)."""
        ...

    def remember(self, resolved: ResolvedVersion, sha256: str) -> None:
        """``resolved`` serves now: the version to fall back on when the registry cannot be reached."""
        ...

    def cached(self, reason: str) -> ResolvedVersion | None:
        """The version remembered for this URI, when a local copy of it is kept (``reason``: why the registry's
        own answer is not taken)."""
        ...


def is_registry_uri(uri: str | os.PathLike[str]) -> bool:
    return isinstance(uri, str) and uri.startswith(MLFLOW_SCHEME)


class LocalSource:
    """A bundle folder, or a model folder whose newest version folder is served (so a new ``tabserve train``
    into the same folder is picked up by polling)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.uri = str(self.path)

    def resolve(self) -> ResolvedVersion:
        folder = resolve_bundle_dir(self.path)
        name, version = _name_version(folder)
        return ResolvedVersion(uri=self.uri, name=name, version=version)

    def fetch(self, resolved: ResolvedVersion) -> Path:
        return resolve_bundle_dir(self.path)

    def fingerprint(self) -> Fingerprint:
        try:
            folder = resolve_bundle_dir(self.path)
        except BundleError:
            folder = self.path
        return files_fingerprint(folder)

    def remember(self, resolved: ResolvedVersion, sha256: str) -> None:
        """The folder is its own record."""

    def cached(self, reason: str) -> ResolvedVersion | None:
        return None


def files_fingerprint(folder: Path) -> Fingerprint:
    """(path, size, mtime) of each file under ``folder``: a copy still being written changes it, a finished
    one does not (the bundle's own checks, not this, decide whether it may serve)."""
    out = []
    try:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            with contextlib.suppress(OSError):  # removed while we look: it is missing from the fingerprint
                st = path.stat()
                if stat.S_ISREG(st.st_mode):
                    out.append((str(path), st.st_size, st.st_mtime_ns))
    except OSError:
        pass
    return tuple(out)


def _name_version(folder: Path) -> tuple[str, str]:
    import json

    try:
        raw = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return str(raw["name"]), str(raw["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{folder / MANIFEST_FILE} cannot be read: {exc}", path=str(folder)) from exc


def open_source(uri: str | os.PathLike[str], *, home: Path, timeout_s: float = REGISTRY_TIMEOUT_S) -> ModelSource:
    """The source for a bundle path or a ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI; ``timeout_s``
    bounds each question to the registry."""
    if is_registry_uri(uri):
        try:
            from tabserve.registry.mlflow import MlflowSource
        except ImportError as exc:  # the [mlflow] extra is not installed
            raise ConfigError(f"{uri} is an MLflow registry URI; install the MLflow extra: "
                              "pip install 'tabserve[mlflow]'") from exc
        return MlflowSource(str(uri), home=home, timeout_s=timeout_s)
    return LocalSource(uri)


def local_bundle(uri: str | os.PathLike[str], *, home: Path | None = None,
                 timeout_s: float = REGISTRY_TIMEOUT_S) -> Path:
    """The local bundle folder that a bundle path, a model folder (its newest version) or a ``models:/`` URI
    names: a registry version is resolved and downloaded into ``HOME/cache/mlflow`` (verified by sha256, reused
    when already there) exactly as ``tabserve serve`` does. ``home`` defaults to ``$TABSERVE_HOME``; the registry
    is ``MLFLOW_TRACKING_URI``, else the embedded store under ``HOME/mlflow``."""
    if not is_registry_uri(uri):
        return resolve_bundle_dir(Path(uri).expanduser())
    if home is None:
        from tabserve.settings import default_home

        home = default_home()
    source = open_source(uri, home=home, timeout_s=timeout_s)
    return source.fetch(source.resolve())


def version_uri(uri: str | os.PathLike[str], version: str) -> str:
    """The URI of one fixed version of the model ``uri`` names: ``models:/NAME/VERSION``, or the version folder
    beside a local bundle."""
    if is_registry_uri(uri):
        return f"{MLFLOW_SCHEME}{registered_name(str(uri))}/{version}"
    path = Path(uri).expanduser()
    model_dir = path.parent if (path / MANIFEST_FILE).is_file() else path
    return str(model_dir / version)


def variant_uri(primary: str | os.PathLike[str], label: str) -> str:
    """What a traffic variant names: a version number or an alias of the primary's model, or a URI/path."""
    if is_registry_uri(label) or "/" in label or os.sep in label:
        return label
    if label.isdigit():
        return version_uri(primary, label)
    if is_registry_uri(primary):
        return f"{MLFLOW_SCHEME}{registered_name(str(primary))}@{label}"
    raise ConfigError(f"traffic variant {label!r}: an alias only means something for a registry model "
                      f"(models:/NAME@ALIAS); {primary} is a local bundle, so name a version number or a path")


def registered_name(uri: str) -> str:
    """NAME in ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME``."""
    rest = uri[len(MLFLOW_SCHEME):]
    name = rest.split("@", 1)[0].split("/", 1)[0]
    if not name:
        raise ConfigError(f"{uri!r} names no model: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return name
