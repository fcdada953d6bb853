"""Talking to an MLflow store: where it is (``tracking_uri``, ``artifact_root``), a client (``client``), MLflow's
exceptions as tabserve's (``registry_errors``), and calls bounded in time (``bounded``).

MLflow is imported lazily, in ``client`` only, so the serving install does not need it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tabserve.errors import ConfigError, ModelNotFound, RegistryUnavailable, TabserveError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MISSING_CODES", "artifact_root", "bounded", "client", "first_line", "registry_errors", "safe_uri",
           "tracking_uri", "unreachable"]

# MLflow's HTTP client retries 7 times with a growing backoff (minutes) when a server is down; a server that
# polls an alias, or a person at a terminal, should hear within seconds. Set these variables to override.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST",)  # MLflow's error codes for "no such model or version"
# Exceptions (anywhere in the chain MLflow wraps them in) that mean "not reachable now", not "wrong request".
_UNREACHABLE = ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "RetryError", "MaxRetryError",
                "NewConnectionError", "ProtocolError", "ChunkedEncodingError")
_CALLS = 4  # registry questions in flight at once; a call past its deadline keeps its thread until MLflow gives up
_T = TypeVar("_T")


def tracking_uri(home: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded store: SQLite at ``HOME/mlflow/mlflow.db``."""
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return configured
    folder = Path(home).expanduser().resolve() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def artifact_root(home: Path) -> Path | None:
    """Where the embedded store keeps artifacts (``HOME/mlflow/artifacts``); None with
    ``MLFLOW_TRACKING_URI``, whose server (or MLflow's default) decides."""
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return None
    root = Path(home).expanduser().resolve() / "mlflow" / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return root


def client(uri: str) -> MlflowClient:
    """An MLflow client whose tracking and registry stores are both ``uri``."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ConfigError("the MLflow registry needs the MLflow extra: "
                          "pip install 'tabserve[mlflow]'") from exc
    with registry_errors(uri):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def registry_errors(uri: str, *, missing: str | None = None,
                    missing_codes: tuple[str, ...] = MISSING_CODES) -> Iterator[None]:
    """Turn MLflow's exceptions into tabserve errors: ``missing`` is the message for "does not exist"."""
    try:
        yield
    except TabserveError:
        raise
    except Exception as exc:  # MlflowException, requests' and SQLAlchemy's errors, OSError...
        if missing is not None and getattr(exc, "error_code", "") in missing_codes:
            raise ModelNotFound(f"{missing} in the MLflow registry at {safe_uri(uri)}") from exc
        if unreachable(exc):
            raise RegistryUnavailable(f"the MLflow registry at {safe_uri(uri)} cannot be used: {first_line(exc)} "
                                      "(check MLFLOW_TRACKING_URI, and that the server is running)",
                                      registry=safe_uri(uri)) from exc
        raise ConfigError(f"the MLflow registry at {safe_uri(uri)} cannot be used: {first_line(exc)} (check "
                          "MLFLOW_TRACKING_URI, and that the server is running)") from exc


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the registry could not be reached, rather than refused."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, TimeoutError)) or type(current).__name__ in _UNREACHABLE:
            return True
        current = current.__cause__ or current.__context__
    return False


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _calls() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_CALLS, thread_name_prefix="tabserve-registry")
        return _pool


def bounded(uri: str, timeout_s: float, what: str, call: Callable[[], _T]) -> _T:
    """``call()``, or ``RegistryUnavailable`` once ``timeout_s`` passed: MLflow's own retries of a registry
    that does not answer take minutes, and a poll, an admin reload or a pinned request must hear sooner. The
    embedded store (a local SQLite file, whose first use runs its migrations) is not bounded."""
    if not uri.startswith(("http://", "https://")):
        return call()
    future = _calls().submit(call)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        future.cancel()
        raise RegistryUnavailable(f"the MLflow registry at {safe_uri(uri)} did not answer within {timeout_s:g} s "
                                  f"({what}); check that it is running and reachable, or raise "
                                  "TABSERVE_REGISTRY_TIMEOUT_S", registry=safe_uri(uri)) from None


def safe_uri(uri: str) -> str:
    """The URI without a password (``https://user:secret@host`` -> ``https://user:***@host``)."""
    return re.sub(r"(//[^:/@]+):[^@/]+@", r"\1:***@", uri)


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (MLflow's carry whole server responses)."""
    text = str(getattr(exc, "message", "") or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
