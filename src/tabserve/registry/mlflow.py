"""The MLflow model registry as a bundle source: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and
``models:/NAME`` (the latest version).

A registered version's artifacts are an MLflow model folder (``MLmodel`` + ``bundle/``, see
``tabserve.training.publish``); ``fetch`` downloads the ``bundle/`` folder alone into
``HOME/cache/mlflow/NAME/VERSION`` (``mlflow_cache``). MLflow is imported by ``mlflow_store`` (and
``training.publish``) only, lazily, so the serving install does not need it. MLflow's exceptions never leave
these modules: they become ``ModelNotFound`` (no such model, alias or version), ``BundleError`` (artifacts
missing or not a valid bundle), ``RegistryUnavailable`` (the registry cannot be reached, or did not answer in
time) or ``ConfigError`` (it cannot be used).

Each version served is remembered per URI in ``HOME/cache/mlflow/NAME/served-KEY.json`` (version and sha256 of
its cached copy), so that a server restarted while the registry is down serves that copy (``cached``) until
the registry answers again.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabserve.errors import BundleError, ConfigError, ModelNotFound, RegistryUnavailable
from tabserve.registry import MLFLOW_SCHEME, REGISTRY_TIMEOUT_S, ResolvedVersion
from tabserve.registry.mlflow_cache import check_download, swap_in, valid_copy
from tabserve.registry.mlflow_store import (
    MISSING_CODES,
    artifact_root,
    bounded,
    client,
    first_line,
    registry_errors,
    safe_uri,
    tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

# artifact_root, client, registry_errors and tracking_uri live in mlflow_store; importing them from here, as
# training.publish and the CLI do, stays supported
__all__ = ["BUNDLE_PATH", "TAG_BUNDLE_PATH", "TAG_MANIFEST_VERSION", "TAG_SHA256", "MlflowSource",
           "artifact_root", "check_served", "client", "parse_uri", "registry_errors", "tracking_uri"]

BUNDLE_PATH = "bundle"  # the bundle's folder inside a registered version's artifacts
TAG_SHA256 = "tabserve.sha256"
TAG_MANIFEST_VERSION = "tabserve.manifest_version"
TAG_BUNDLE_PATH = "tabserve.bundle_path"

_NAME = re.compile(r"[^/@'\"\s][^/@'\"]*")
_ALIAS = re.compile(r"[\w-]+")


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME``."""
    if not uri.startswith(MLFLOW_SCHEME):
        raise ConfigError(f"{uri!r} is not a registry URI: write models:/NAME@ALIAS, models:/NAME/VERSION or "
                          "models:/NAME")
    rest = uri[len(MLFLOW_SCHEME):]
    name, version, alias = rest, None, None
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if not _ALIAS.fullmatch(alias):
            raise ConfigError(f"{uri!r}: alias {alias!r} must be letters, digits, '_' or '-'")
    elif "/" in rest:
        name, _, version = rest.partition("/")
        if version == "latest":
            version = None
        elif not version.isdigit():
            raise ConfigError(f"{uri!r}: {version!r} is not a version number; MLflow stages are replaced by "
                              f"aliases: write models:/{name}@ALIAS or models:/{name}/VERSION")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{uri!r} names no valid model: write models:/NAME@ALIAS, models:/NAME/VERSION or "
                          "models:/NAME (the latest version)")
    return name, version, alias


class MlflowSource:
    """A ``models:/`` URI in the registry at ``tracking_uri(home)``; bundles cached in HOME/cache/mlflow."""

    def __init__(self, uri: str, *, home: Path, timeout_s: float = REGISTRY_TIMEOUT_S) -> None:
        self.uri = uri
        self.name, self.version, self.alias = parse_uri(uri)
        self.home = Path(home).expanduser()
        self.tracking_uri = tracking_uri(self.home)
        self.timeout_s = timeout_s
        # Each HTTP request of MLflow's client gives up within the bound too (unless the variable is set), so a
        # call abandoned by ``bounded`` frees its thread soon.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout_s))))
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    def resolve(self) -> ResolvedVersion:
        self._refuse_an_empty_embedded_store()
        self.client  # noqa: B018 - imported and built outside the bound: importing MLflow takes seconds
        return bounded(self.tracking_uri, self.timeout_s, f"which version {self.uri} is", self._resolve)

    def _refuse_an_empty_embedded_store(self) -> None:
        """A SQLite store that does not exist holds no model: say so, rather than let MLflow create an empty
        database (and a server wait for a model that nobody registered)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return
        database = Path(self.tracking_uri.removeprefix("sqlite:///"))
        if not database.exists():
            raise ModelNotFound(f"there is no model {self.name!r}: nothing was ever registered in the MLflow "
                                f"registry at {database} (it does not exist); register the model there "
                                f"(tabserve train ... --register {self.name}), or set MLFLOW_TRACKING_URI to your "
                                "MLflow server", uri=self.uri)

    def _resolve(self) -> ResolvedVersion:
        if self.alias is not None:
            version = self._by_alias(self.alias)
        elif self.version is not None:
            missing = f"model {self.name!r} has no version {self.version}"
            with registry_errors(self.tracking_uri, missing=missing):
                version = str(self.client.get_model_version(self.name, self.version).version)
        else:
            version = self._latest()
        return ResolvedVersion(uri=self.uri, name=self.name, version=version, alias=self.alias)

    def fingerprint(self) -> None:
        return None  # a registered version's files never change; its download is verified by sha256

    @property
    def _record(self) -> Path:
        key = f"alias-{self.alias}" if self.alias else f"version-{self.version}" if self.version else "latest"
        return self.home / "cache" / "mlflow" / self.name / f"served-{key}.json"

    def remember(self, resolved: ResolvedVersion, sha256: str) -> None:
        """Written atomically (a temporary file renamed over the record): a reader sees the old or the new."""
        record = self._record
        record.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"uri": self.uri, "version": resolved.version, "sha256": sha256, "at": time.time()})
        tmp = record.with_name(f".{record.name}.{uuid.uuid4().hex}")
        try:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(record)
        finally:
            tmp.unlink(missing_ok=True)

    def cached(self, reason: str) -> ResolvedVersion | None:
        """The version served last for this URI, if its copy is still in the cache (verified when fetched)."""
        try:
            raw = json.loads(self._record.read_text(encoding="utf-8"))
            version, sha256 = str(raw["version"]), str(raw["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (self.home / "cache" / "mlflow" / self.name / version).is_dir():
            return None
        return ResolvedVersion(uri=self.uri, name=self.name, version=version, alias=self.alias, fallback=reason,
                               sha256=sha256)

    def fetch(self, resolved: ResolvedVersion) -> Path:
        cache = self.home / "cache" / "mlflow" / resolved.name / resolved.version
        if resolved.fallback is not None:  # the registry is down: the copy must be the very one served before
            if not valid_copy(cache, resolved.sha256):
                raise BundleError(f"model {resolved.name!r} version {resolved.version}: the registry cannot be "
                                  f"reached ({resolved.fallback}) and the cached copy at {cache} no longer "
                                  "verifies", path=str(cache))
            return cache
        missing = f"model {resolved.name!r} has no version {resolved.version}"
        with registry_errors(self.tracking_uri, missing=missing):
            found = bounded(self.tracking_uri, self.timeout_s, f"version {resolved.version} of {resolved.name!r}",
                            lambda: self.client.get_model_version(resolved.name, resolved.version))
        tags: dict[str, str] = dict(found.tags or {})
        if valid_copy(cache, tags.get(TAG_SHA256)):
            return cache
        where = f"{str(found.source).rstrip('/')}/{tags.get(TAG_BUNDLE_PATH, BUNDLE_PATH)}"
        staging = cache.parent / f".{resolved.version}.{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            bundle = self._download(where, staging, resolved)
            check_download(bundle, tags.get(TAG_SHA256), resolved)
            swap_in(bundle, cache, tags.get(TAG_SHA256))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cache

    def _by_alias(self, alias: str) -> str:
        try:
            # MLflow answers an unknown alias with INVALID_PARAMETER_VALUE, an unknown model with NOT_EXIST.
            codes = (*MISSING_CODES, "INVALID_PARAMETER_VALUE")
            with registry_errors(self.tracking_uri, missing="", missing_codes=codes):
                return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except ModelNotFound as exc:
            known = self._aliases()  # an unknown model is reported as such
            listing = ", ".join(f"{a} -> {v}" for a, v in sorted(known.items())) or "none"
            raise ModelNotFound(
                f"model {self.name!r} has no alias {alias!r} in the MLflow registry at "
                f"{safe_uri(self.tracking_uri)} (its aliases: {listing}); set it with "
                f"`tabserve registry alias {self.name} {alias} VERSION`"
            ) from exc

    def _aliases(self) -> dict[str, str]:
        with registry_errors(self.tracking_uri, missing=f"there is no model {self.name!r}"):
            model = self.client.get_registered_model(self.name)
        return {str(a): str(v) for a, v in (model.aliases or {}).items()}

    def _latest(self) -> str:
        with registry_errors(self.tracking_uri):
            found = self.client.search_model_versions(f"name='{self.name}'", max_results=1,
                                                      order_by=["version_number DESC"])
        if not found:
            self._aliases()  # an unknown model is ModelNotFound as such, not "no versions"
            raise ModelNotFound(f"model {self.name!r} has no versions in the MLflow registry at "
                                f"{safe_uri(self.tracking_uri)}; register one with "
                                f"`tabserve train ... --register {self.name}`")
        return str(found[0].version)

    def _download(self, where: str, staging: Path, resolved: ResolvedVersion) -> Path:
        try:
            from mlflow.artifacts import download_artifacts

            local = Path(download_artifacts(artifact_uri=where, dst_path=str(staging),
                                            tracking_uri=self.tracking_uri))
        except Exception as exc:  # MlflowException, OSError, requests' errors
            raise BundleError(f"model {resolved.name!r} version {resolved.version}: its bundle cannot be "
                              f"downloaded from {where}: {first_line(exc)}",
                              path=where) from exc
        if not local.is_dir():
            raise BundleError(f"model {resolved.name!r} version {resolved.version}: {where} is a file, not a "
                              "bundle folder (tabserve.json + model.onnx)", path=where)
        return local


def check_served(uri: str, *, home: Path, timeout_s: float = REGISTRY_TIMEOUT_S) -> RegistryUnavailable | None:
    """Before a server starts on ``uri``: the registry's "no such model, version or alias" is raised (a typo
    stops the command instead of leaving a server unready for ever); a registry that cannot be asked now is
    returned, for the caller to say so and start anyway (the server retries, or serves its cached copy)."""
    try:
        MlflowSource(uri, home=home, timeout_s=timeout_s).resolve()
    except RegistryUnavailable as exc:
        return exc
    return None


def version_tags(sha256: str, manifest_version: str) -> dict[str, Any]:
    return {TAG_SHA256: sha256, TAG_MANIFEST_VERSION: manifest_version, TAG_BUNDLE_PATH: BUNDLE_PATH}
