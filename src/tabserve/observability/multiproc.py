"""The folder that several worker processes share their metrics through (prometheus_client multiprocess mode).

prometheus_client picks its storage when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``: so this module
does not import it, and ``tabserve serve`` calls ``prepare_multiprocess_dir`` before any worker exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tabserve.observability.drift import FILE_PREFIX
from tabserve.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(settings: Settings) -> Path | None:
    """Before the workers start: the folder their metrics share, created, emptied of a previous run's files
    and exported as ``PROMETHEUS_MULTIPROC_DIR``. None when one process serves and none was asked for."""
    if not settings.metrics:
        return None
    given = settings.metrics_dir or os.environ.get(MULTIPROC_ENV)
    if not given and settings.workers == 1:
        return None
    folder = Path(given) if given else default_multiprocess_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():  # only our own files: the folder may be one the user shares
        if path.is_file() and (path.suffix == ".db" or path.name.startswith(FILE_PREFIX)):
            path.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def default_multiprocess_dir(settings: Settings) -> Path:
    return settings.home / "metrics" / str(settings.port)


def remove_multiprocess_dir(settings: Settings, folder: Path | None) -> None:
    """After the workers stopped: the default folder goes (one given by the user stays, emptied at next start)."""
    if folder is not None and folder == default_multiprocess_dir(settings):
        shutil.rmtree(folder, ignore_errors=True)
