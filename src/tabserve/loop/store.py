"""Where the payload log and the feedback live: one small interface, a local folder today.

Layout under the root (one folder per model, Hive-style date partitions a query engine reads as a column):

    MODEL/date=YYYY-MM-DD/part-<unix ms>-<host>-<pid>-<seq>.parquet            predictions (payload log)
    MODEL/feedback/date=YYYY-MM-DD/part-<unix ms>-<host>-<pid>-<seq>.parquet   ground-truth labels

Host and process id keep the writers of several replicas on one shared volume apart (two pods are both pid 1).

A file appears whole or not at all: it is written under a dot-name ending in ``.tmp``, fsynced, renamed into
place and its folder fsynced. Files never change once in place, so a reader may cache what it has read by
name. An object store (put is atomic there) would implement the same four methods.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from tabserve.observability.drift import pid_alive

FEEDBACK = "feedback"
PART = re.compile(r"^part-(\d+)-([A-Za-z0-9.]+)-(\d+)-(\d+)\.parquet$")
TEMP = re.compile(r"^\.part-\d+-([A-Za-z0-9.]+)-(\d+)-\d+\.parquet\.tmp$")
HOST = re.sub(r"[^A-Za-z0-9.]", ".", socket.gethostname() or "host")[:64] or "host"
DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_sequence = itertools.count()


class LogStore(Protocol):
    def write(self, relative: str, fill: Callable[[BinaryIO], None]) -> str:
        """Create ``relative`` whole (``fill`` writes the bytes), atomically; returns its name."""

    def open_partial(self, relative: str) -> tuple[BinaryIO, Callable[[], str]]:
        """A file being written (invisible to readers) and the function that publishes it."""

    def parts(self, model: str, kind: str, since: dt.date | None = None) -> list[str]:
        """Published files of ``model`` (kind ``payload`` or ``feedback``), oldest first."""

    def models(self) -> list[str]:
        """Models with a folder."""

    def path(self, name: str) -> str:
        """What pyarrow opens for ``name``."""


def part_name(model: str, kind: str, when: float) -> str:
    """A new, unique file name: time, process and a per-process sequence keep writers apart."""
    day = dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d")
    folder = f"{model}/{FEEDBACK}/date={day}" if kind == FEEDBACK else f"{model}/date={day}"
    return f"{folder}/part-{int(when * 1000)}-{HOST}-{os.getpid()}-{next(_sequence)}.parquet"


class LocalStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def write(self, relative: str, fill: Callable[[BinaryIO], None]) -> str:
        handle, publish = self.open_partial(relative)
        try:
            fill(handle)
        except BaseException:
            handle.close()
            _remove_partial(self.root / relative)
            raise
        return publish()

    def open_partial(self, relative: str) -> tuple[BinaryIO, Callable[[], str]]:
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_name(final)
        handle = open(temp, "wb")  # noqa: SIM115 - closed by publish()

        def publish() -> str:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temp, final)
            _fsync_dir(final.parent)
            return relative

        return handle, publish

    def parts(self, model: str, kind: str, since: dt.date | None = None) -> list[str]:
        base = self.root / model / FEEDBACK if kind == FEEDBACK else self.root / model
        found: list[tuple[int, str]] = []
        for day_dir in _dirs(base):
            match = DATE.match(day_dir.name)
            if match is None or (since is not None and dt.date.fromisoformat(match.group(1)) < since):
                continue
            for entry in os.scandir(day_dir):
                part = PART.match(entry.name)
                if part is not None:
                    found.append((int(part.group(1)), str(Path(entry.path).relative_to(self.root))))
        return [name for _, name in sorted(found)]

    def models(self) -> list[str]:
        return sorted(d.name for d in _dirs(self.root))

    def path(self, name: str) -> str:
        return str(self.root / name)

    def remove_stale_partials(self) -> int:
        """Temp files of this host's writers that died (SIGKILL, power loss): never published, never read;
        removed. Another host's are left alone: its processes cannot be asked whether they live."""
        removed = 0
        for temp in self.root.glob("**/.part-*.tmp"):
            match = TEMP.match(temp.name)
            if match and match.group(1) == HOST and not pid_alive(int(match.group(2))):
                _remove_partial(temp.with_name(temp.name[1:-4]))
                removed += 1
        return removed


def _temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def _remove_partial(final: Path) -> None:
    try:
        _temp_name(final).unlink()
    except FileNotFoundError:
        pass


def _dirs(base: Path) -> Iterator[Path]:
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            yield Path(entry.path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
