"""The folder that several worker processes share their metrics through (prometheus_client multiprocess mode).

prometheus_client picks its storage when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``: so this module
imports it only inside ``install_reserved_storage``, and ``tabserve serve`` calls ``prepare_multiprocess_dir``
before any worker exists.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tabserve.observability.drift import FILE_PREFIX, pid_alive
from tabserve.observability.logging import get_logger
from tabserve.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set by `tabserve serve` for its workers: they must not try the folder again (a failure is logged once, there).
# Without the TABSERVE_ prefix, so that no setting reads it.
PREPARED_ENV = "_TABSERVE_METRICS_PREPARED"
LAUNCHER_PREFIX = "launcher-"  # the folder of another launcher's workers: launcher-<its pid>


def prepare_multiprocess_dir(settings: Settings) -> Path | None:
    """Before the workers start: the folder their metrics share, created, emptied of a previous run's files
    and exported as ``PROMETHEUS_MULTIPROC_DIR``. None when one process serves and none was asked for."""
    if not settings.metrics:
        return None
    os.environ[PREPARED_ENV] = "1"  # our workers: the folder is decided here, even when it cannot be made
    given = settings.metrics_dir or os.environ.get(MULTIPROC_ENV)
    if not given and settings.workers == 1:
        return None
    folder = Path(given) if given else default_multiprocess_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():  # only our own files: the folder may be one the user shares
            if path.is_file() and (path.suffix == ".db" or path.name.startswith(FILE_PREFIX)):
                path.unlink(missing_ok=True)
    except OSError as exc:  # a full disk (no block or inode for the folder), a read-only one: serve anyway
        storage_failed(exc, folder, effect="each worker keeps its metrics in memory and /metrics shows those of "
                                           "the worker that answers; free space in the folder and restart")
        return None
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def join_launcher_workers(settings: Settings) -> Path | None:
    """In a worker of another launcher (``uvicorn --factory ... --workers N``, gunicorn's UvicornWorker): the
    folder shared with its sibling workers, exported as ``PROMETHEUS_MULTIPROC_DIR``. None when the folder was
    already given (``tabserve serve`` prepares it before its workers start) or when this is no worker.

    Without it each worker counts alone and /metrics shows the share of whichever worker answers the scrape.
    The workers of one launcher share their parent process, so a folder named after the parent is theirs (a
    folder given by ``TABSERVE_METRICS_DIR`` is used as it is: several processes use it, none may empty it)."""
    if not settings.metrics or os.environ.get(MULTIPROC_ENV) or os.environ.get(PREPARED_ENV) \
            or not _launched_as_worker():
        return None
    folder = settings.metrics_dir or settings.home / "metrics" / f"{LAUNCHER_PREFIX}{os.getppid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if settings.metrics_dir is None:
            _remove_stale_launcher_dirs(folder.parent)
    except OSError as exc:
        storage_failed(exc, folder, effect="each worker keeps its metrics in memory and /metrics shows those of "
                                           "the worker that answers; free space in the folder and restart")
        mark_unshared()
        return None
    os.environ[MULTIPROC_ENV] = str(folder)
    get_logger("tabserve.metrics").info("metrics_shared", folder=str(folder), launcher_pid=os.getppid(),
                                        reason="a worker of another launcher: the workers add up their metrics")
    return folder


def _launched_as_worker() -> bool:
    # uvicorn's --workers and --reload spawn their workers with multiprocessing; gunicorn forks its own
    return multiprocessing.parent_process() is not None or "gunicorn.workers" in sys.modules


def _remove_stale_launcher_dirs(parent: Path) -> None:
    """Folders of launchers that are gone (their files would otherwise pile up, one folder per launch)."""
    for path in parent.glob(f"{LAUNCHER_PREFIX}*"):
        pid = path.name.removeprefix(LAUNCHER_PREFIX)
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def default_multiprocess_dir(settings: Settings) -> Path:
    return settings.home / "metrics" / str(settings.port)


def remove_multiprocess_dir(settings: Settings, folder: Path | None) -> None:
    """After the workers stopped: the default folder goes (one given by the user stays, emptied at next start)."""
    if folder is not None and folder == default_multiprocess_dir(settings):
        shutil.rmtree(folder, ignore_errors=True)


# -- process CPU and memory ----------------------------------------------------------------------------------

def process_families(folder: Path | None) -> Iterator[Any]:
    """CPU seconds, resident memory, open files of the serving processes (``process_*``, as prometheus_client
    names them): this process's, or with several workers every live worker's, labelled ``pid``. A scrape is
    answered by one worker, and prometheus_client's ProcessCollector reads one process only; the workers'
    pids are in their file names in the shared folder (``counter_<pid>.db``)."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.process_collector import ProcessCollector

    if folder is None:
        yield from ProcessCollector(registry=None).collect()
        return
    pids = {int(pid) for pid in (p.stem.rsplit("_", 1)[-1] for p in folder.glob("*.db")) if pid.isdigit()}
    merged: dict[str, Metric] = {}
    for pid in sorted(p for p in pids if pid_alive(p)):
        for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
            out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
    yield from merged.values()


# -- a full disk -----------------------------------------------------------------------------------------------
# prometheus_client keeps each worker's values in files it grows with truncate() and maps into memory: on a full
# filesystem the file is sparse, and the first write into a page that has no block behind it kills the process
# with SIGBUS (nothing logged; with several workers the supervisor restarts them into the same death). The
# blocks are reserved here (posix_fallocate) before a file is mapped or grown, so a full disk is an OSError at
# that moment instead: the value then lives in this process's memory only (missing from /metrics), one line
# is logged and the failures are counted (tabserve_metrics_degraded, tabserve_metrics_storage_failures).

_storage_failures = 0
_unshared = False  # a worker whose multiprocess folder could not be prepared keeps its metrics to itself
_log_once = threading.Lock()
_logged = False


def storage_failures() -> int:
    """Metric values of this process that could not be stored in the multiprocess folder (a full disk)."""
    return _storage_failures


def storage_degraded() -> bool:
    return bool(_storage_failures) or _unshared


def mark_unshared() -> None:
    """This worker was meant to share its metrics, but ``prepare_multiprocess_dir`` could not make the folder."""
    global _unshared
    _unshared = True


def storage_failed(exc: OSError, folder: str | os.PathLike[str] | None, effect: str | None = None) -> None:
    """Count a value (or a drift window) that stays in memory; log the first one, with the folder's free space."""
    global _storage_failures, _logged
    _storage_failures += 1
    with _log_once:
        first, _logged = not _logged, True
    if first:
        where = Path(folder) if folder else Path(os.environ.get(MULTIPROC_ENV, "."))
        get_logger("tabserve.metrics").error(
            "metrics_degraded", folder=str(where), free_bytes=_free_bytes(where), error=str(exc),
            effect=effect or "metric values this worker records from now on may be missing from /metrics; "
                             "predictions are not affected; free space in the folder and restart to get them back")


def install_reserved_storage() -> None:
    """Make prometheus_client's multiprocess values reserve their file blocks (see above); once per process."""
    from prometheus_client import values
    from prometheus_client.mmap_dict import MmapedDict

    if getattr(values.ValueClass, "_tabserve_reserved", False):
        return
    if not hasattr(values, "MmapedDict") or not hasattr(MmapedDict, "_init_value"):
        return  # a prometheus_client of another shape: left as it is

    class ReservedMmapedDict(MmapedDict):
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                _reserve_new(filename)
            super().__init__(filename, read_mode)

        def _init_value(self, key: str) -> None:
            encoded = key.encode("utf-8")
            size = 4 + len(encoded) + (8 - (len(encoded) + 4) % 8) + 16  # as MmapedDict lays an entry out
            capacity = self._capacity
            while self._used + size > capacity:
                capacity *= 2
            if capacity != self._capacity:
                os.posix_fallocate(self._f.fileno(), 0, capacity)  # ENOSPC here, not SIGBUS on the write
            super()._init_value(key)

    values.MmapedDict = ReservedMmapedDict
    stored = values.MultiProcessValue()

    def value(*args: Any, **kwargs: Any) -> Any:
        try:
            return stored(*args, **kwargs)
        except OSError as exc:
            storage_failed(exc, None)
            return values.MutexValue(*args, **kwargs)

    value._multiprocess = True  # type: ignore[attr-defined]
    value._tabserve_reserved = True  # type: ignore[attr-defined]
    values.ValueClass = value


def reserve(fd: int, size: int) -> None:
    """Give the first ``size`` bytes of an open file real blocks (ENOSPC now rather than SIGBUS later)."""
    os.posix_fallocate(fd, 0, size)


def _reserve_new(filename: str) -> None:
    """A new values file gets its initial blocks; one that cannot is removed (a scrape must not read it)."""
    from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE

    with open(filename, "a+b") as f:
        if os.fstat(f.fileno()).st_size >= _INITIAL_MMAP_SIZE:
            return
        try:
            reserve(f.fileno(), _INITIAL_MMAP_SIZE)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(filename)
            raise


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None
