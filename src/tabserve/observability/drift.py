"""Input drift: how far the recent rows of each feature are from what the model saw in training (PSI).

The reference is the manifest's training quantiles of each numeric feature: the bins are the intervals
between them (plus one bin for missing values), each expected to hold the share of training rows between its
two quantiles. Each worker keeps the last ``size`` rows' raw values in a ring (one slice copy per batch, no
per-row Python); binning and the population stability index are computed only when ``/metrics`` is scraped.

With several workers the ring lives in a memory-mapped file of the multiprocess metrics folder, next to a
JSON file that describes it, so that whichever worker answers a scrape reads every live worker's window.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tabserve.core.manifest import Manifest
from tabserve.observability.tally import drain

FILE_PREFIX = "drift-"  # the files of this module in the multiprocess folder: drift-PID-KEY.json|.bin
PSI_FLOOR = 1e-4  # a share of 0 (an empty bin) counts as this much, so that one empty bin is not infinite
_HEADER = 8  # the data file starts with the number of rows ever written (int64)


@dataclass(frozen=True)
class DriftReference:
    """Bins and expected shares of the drifting features of one model version."""

    model: str
    version: str
    features: list[str]
    columns: list[int] | None  # columns of the numeric input to watch; None: all of them
    edges: list[list[float]]  # per feature, the distinct training quantiles (bin boundaries)
    shares: list[list[float]]  # per feature, len(edges) + 2 shares: one per bin, then missing values
    _edges: np.ndarray = field(init=False, repr=False)
    _expected: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Padded to a rectangle: +inf edges make bins no value falls in, expected to hold nothing.
        width = max((len(e) for e in self.edges), default=0)
        edges = np.full((len(self.edges), width), np.inf)
        expected = np.zeros((len(self.edges), width + 2))
        for i, (e, s) in enumerate(zip(self.edges, self.shares, strict=True)):
            edges[i, :len(e)] = e
            expected[i, :len(e) + 1] = s[:-1]
            expected[i, -1] = s[-1]
        object.__setattr__(self, "_edges", edges)
        object.__setattr__(self, "_expected", expected)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> DriftReference | None:
        """The numeric features that have training quantiles; None when no feature has any."""
        numeric = manifest.features_of("numeric")
        names, columns, edges, shares = [], [], [], []
        for col, feature in enumerate(numeric):
            stats = feature.stats
            if stats is None or not stats.quantiles.values:
                continue
            e, s = _bins(stats.quantiles.probs, stats.quantiles.values, stats.missing, stats.count)
            names.append(feature.name)
            columns.append(col)
            edges.append(e)
            shares.append(s)
        if not names:
            return None
        return cls(manifest.name, manifest.version, names, None if len(columns) == len(numeric) else columns,
                   edges, shares)

    def counts(self, window: np.ndarray) -> np.ndarray:
        """Rows per bin, per feature: shape (features, bins + 1), the last column being missing values."""
        n_features, width = self._expected.shape
        bins = (window[:, :, None] >= self._edges[None, :, :]).sum(axis=2)  # NaN compares False: bin 0 ...
        bins[np.isnan(window)] = width - 1  # ... so missing values are moved to their own bin
        flat = bins + np.arange(n_features) * width
        return np.bincount(flat.ravel(), minlength=n_features * width).reshape(n_features, width)

    def psi(self, window: np.ndarray) -> np.ndarray:
        """Population stability index of each feature over ``window`` (rows, features); NaN with no rows."""
        if window.shape[0] == 0:
            return np.full(len(self.features), np.nan)
        actual = np.maximum(self.counts(window) / window.shape[0], PSI_FLOOR)
        expected = np.maximum(self._expected, PSI_FLOOR)
        return ((actual - expected) * np.log(actual / expected)).sum(axis=1)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "features": self.features,
                "columns": self.columns, "edges": self.edges, "shares": self.shares}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DriftReference:
        return cls(data["model"], data["version"], data["features"], data["columns"], data["edges"],
                   data["shares"])


def _bins(probs: list[float], values: list[float], missing: int, count: int) -> tuple[list[float], list[float]]:
    """The distinct training quantiles as bin edges, and the share of training rows expected in each bin.

    A value's share below it is the first probability at which it appears, so that a value repeated over
    several quantiles (a discrete feature) puts all of its mass in the one bin that starts at it; below the
    minimum and from the maximum on, nothing is expected (a value out of the training range stands out).
    """
    p = np.asarray(probs, dtype=np.float64)
    edges, first = np.unique(np.asarray(values, dtype=np.float64), return_index=True)
    cumulative = np.concatenate([[0.0], p[first], [1.0]])
    present = count / (count + missing) if count + missing else 1.0
    shares = np.diff(cumulative) * present
    return edges.tolist(), [*shares.tolist(), 1.0 - present]


class DriftWindow:
    """The last ``size`` rows of one model version's drifting features, overwritten in a ring.

    Writers do not lock: two batches recorded at the same moment (a large one in a thread, a small one on the
    event loop) may overwrite a few of each other's rows, which changes nothing a PSI can see. In one process
    (no shared folder), ``record`` only keeps a reference to the batch; the rows are copied into the ring when a
    scrape reads them (``rows``) or once a window's worth waits (a one-row batch's copy was ~5% of a request
    at concurrency 1). With a folder, other workers read the ring at any time: rows are copied at once.
    """

    def __init__(self, reference: DriftReference, size: int, folder: Path | None = None) -> None:
        self.reference = reference
        self.size = size
        self._columns = reference.columns
        self._written = 0
        self._pending: deque[np.ndarray] = deque()  # one process: batches not yet copied into the ring
        self._pending_rows = 0
        self._deferred = folder is None
        self._paths: tuple[Path, Path] | None = None
        self._mmap: mmap.mmap | None = None
        n_features = len(reference.features)
        if folder is None:
            self._count = np.zeros(1, dtype=np.int64)
            self._values = np.zeros((size, n_features))
            return
        meta, data = window_paths(folder, os.getpid(), reference.model, reference.version)
        with open(data, "w+b") as f:
            # Blocks reserved, not a sparse truncate: on a full disk a write into the map would be a SIGBUS.
            os.posix_fallocate(f.fileno(), 0, _HEADER + size * n_features * 8)
            self._mmap = mmap.mmap(f.fileno(), 0)
        self._count = np.frombuffer(self._mmap, dtype=np.int64, count=1)
        self._values = np.frombuffer(self._mmap, dtype=np.float64, offset=_HEADER).reshape(size, n_features)
        tmp = meta.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({**reference.to_json(), "size": size}))
        tmp.replace(meta)  # readers see the description whole, and only once the data file exists
        self._paths = (meta, data)

    def record(self, x: np.ndarray) -> None:
        """Add a batch of rows of the numeric model input."""
        if self._deferred and x.shape[0] < self.size:
            self._pending.append(x)
            self._pending_rows += x.shape[0]
            if self._pending_rows >= self.size:
                self.fold()
            return
        self._write(x)

    def fold(self) -> None:
        """Copy the batches recorded since into the ring (from any thread: each is taken once)."""
        self._pending_rows = 0
        taken = drain(self._pending)
        if taken:
            self._write(taken[0] if len(taken) == 1 else np.concatenate(taken))

    def _write(self, x: np.ndarray) -> None:
        if self._columns is not None:
            x = x[:, self._columns]
        rows = x.shape[0]
        size = self.size
        if rows >= size:
            self._values[:] = x[rows - size:]
        else:
            start = self._written % size
            end = start + rows
            if end <= size:
                self._values[start:end] = x
            else:
                self._values[start:] = x[:size - start]
                self._values[:end - size] = x[size - start:]
        self._written += rows
        self._count[0] = self._written

    def rows(self) -> np.ndarray:
        """The rows held now (at most ``size``), in no particular order."""
        self.fold()
        return self._values[:min(int(self._count[0]), self.size)]

    def close(self) -> None:
        """Stop sharing this window: its files are removed (other workers' scrapes no longer count it)."""
        if self._paths is not None:
            for path in self._paths:
                path.unlink(missing_ok=True)
            self._paths = None
        if self._mmap is not None:
            self._count = np.zeros(1, dtype=np.int64)
            self._values = np.zeros((self.size, len(self.reference.features)))
            with contextlib.suppress(BufferError):  # a scrape still reading it: the mapping goes with it
                self._mmap.close()
            self._mmap = None


def window_paths(folder: Path, pid: int, model: str, version: str) -> tuple[Path, Path]:
    key = hashlib.sha1(f"{model}\0{version}".encode()).hexdigest()[:16]
    stem = folder / f"{FILE_PREFIX}{pid}-{key}"
    return stem.with_suffix(".json"), stem.with_suffix(".bin")


def shared_windows(folder: Path) -> Iterator[tuple[DriftReference, np.ndarray]]:
    """Every live worker's window in ``folder``, as (reference, rows)."""
    for meta in sorted(folder.glob(f"{FILE_PREFIX}*.json")):
        pid = int(meta.name[len(FILE_PREFIX):].split("-", 1)[0])
        if not pid_alive(pid):
            continue  # a worker that died without cleaning up: its rows are stale
        try:
            data = orjson.loads(meta.read_bytes())
            raw = meta.with_suffix(".bin").read_bytes()
        except (FileNotFoundError, orjson.JSONDecodeError):
            continue  # removed, or being replaced, while we read
        reference = DriftReference.from_json(data)
        values = np.frombuffer(raw, dtype=np.float64, offset=_HEADER).reshape(data["size"], -1)
        written = int(np.frombuffer(raw, dtype=np.int64, count=1)[0])
        yield reference, values[:min(written, data["size"])]


def drift_by_version(windows: Iterable[tuple[DriftReference, np.ndarray]]
                     ) -> list[tuple[DriftReference, int, np.ndarray]]:
    """(reference, rows, PSI per feature) for each model version, over the windows of all its workers."""
    grouped: dict[tuple[str, str], tuple[DriftReference, list[np.ndarray]]] = {}
    for reference, rows in windows:
        grouped.setdefault((reference.model, reference.version), (reference, []))[1].append(rows)
    out = []
    for reference, parts in grouped.values():
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out.append((reference, rows.shape[0], reference.psi(rows)))
    return out


def training_sample(manifest: Manifest, rows: int, seed: int = 0) -> np.ndarray | None:
    """Rows drawn from each feature's training distribution independently (inverse of the quantiles), in
    manifest order; None when a feature has neither quantiles nor categories to draw from."""
    rng = np.random.default_rng(seed)
    columns: list[np.ndarray] = []
    for feature in manifest.features:
        if feature.kind == "categorical":
            if not feature.categories:
                return None
            columns.append(rng.choice(np.array(feature.categories, dtype=object), rows))
        elif feature.stats is not None and feature.stats.quantiles.values:
            q = feature.stats.quantiles
            columns.append(np.interp(rng.random(rows), q.probs, q.values))
        else:
            return None
    if all(c.dtype != object for c in columns):
        return np.column_stack(columns)
    return np.column_stack([c.astype(object) for c in columns])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts: it is alive, not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
