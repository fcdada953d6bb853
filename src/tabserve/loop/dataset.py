"""Training rows from traffic: the payload log's rows of a model joined with their labels, as the table
``tabserve train`` would read (the champion's feature columns and its target), plus the original data."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tabserve.core.manifest import Manifest
from tabserve.errors import DataError
from tabserve.loop.reader import training_rows
from tabserve.loop.store import LocalStore


@dataclass(frozen=True)
class LogWindow:
    """What a retraining took from the log, recorded on its MLflow run."""

    log_dir: str
    model: str
    since: str | None
    first: str | None  # the oldest and newest prediction used (UTC)
    last: str | None
    rows: int
    versions: str  # the versions that made those predictions

    def tags(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}log_dir": self.log_dir, f"{prefix}log_model": self.model,
                f"{prefix}log_since": self.since or "", f"{prefix}log_first": self.first or "",
                f"{prefix}log_last": self.last or "", f"{prefix}log_rows": str(self.rows),
                f"{prefix}log_versions": self.versions}


def traffic_frame(log_dir: str | os.PathLike[str], model: str, manifest: Manifest,
                  since: dt.datetime | None) -> tuple[pd.DataFrame, LogWindow]:
    """Logged rows of ``model`` with a label, as columns FEATURES... TARGET."""
    if manifest.target is None:
        raise DataError(f"model {model} records no target column to name the labels after")
    root = Path(log_dir).expanduser()
    if not (root / model).is_dir():
        raise DataError(f"the payload log {root} holds no folder {model!r}: nothing was logged for that model "
                        f"(logged models: {', '.join(LocalStore(root).models()) or 'none'})")
    joined, columns = training_rows(LocalStore(root), model, since)
    names = manifest.feature_names
    missing = [n for n in names if columns.get(n, n) not in joined.columns]
    if len(joined) and missing:
        raise DataError(f"the payload log of {model} lacks feature(s) {', '.join(map(repr, missing))} of the "
                        f"champion: it was logged from another set of features")
    frame = pd.DataFrame({n: joined[columns.get(n, n)].to_numpy() for n in names} if len(joined) else
                         {n: [] for n in names})
    frame[manifest.target.name] = _labels(joined["label"], manifest) if len(joined) else []
    stamps = joined["timestamp"] if len(joined) else pd.Series(dtype="datetime64[us, UTC]")
    window = LogWindow(str(root), model, since.isoformat() if since else None,
                       stamps.min().isoformat() if len(stamps) else None,
                       stamps.max().isoformat() if len(stamps) else None, len(frame),
                       ",".join(sorted(set(map(str, joined["version"])))) if len(joined) else "")
    return frame, window


def _labels(labels: pd.Series, manifest: Manifest) -> pd.Series:
    """Labels were logged as text for classifiers; back to the classes' own type (0/1 stay integers)."""
    classes = manifest.classes or []
    if manifest.task == "classification" and classes and all(isinstance(c, int) for c in classes):
        return labels.astype(int)
    if manifest.task == "classification" and classes and all(isinstance(c, float) for c in classes):
        return labels.astype(float)
    return labels


def parse_day(text: str) -> dt.datetime:
    """``--since``: an ISO date or date-time, UTC unless it says otherwise."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"--since {text!r} is not an ISO date or date-time (2026-12-01, 2026-12-01T08:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
