"""Whether a model needs retraining: live quality below a threshold, or input drift above one, read from the
payload log (no server involved, so a CronJob can ask). One check per call; the caller retrains at most once,
and not again within a cool-down recorded next to the log."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tabserve.core.manifest import Manifest
from tabserve.loop.columns import read_metadata
from tabserve.loop.metrics import HIGHER_IS_BETTER
from tabserve.loop.quality import QualityMonitor
from tabserve.loop.reader import PAYLOAD
from tabserve.loop.store import LocalStore
from tabserve.observability.drift import DriftReference

STATE = ".monitor.json"  # DIR/MODEL/.monitor.json: when the monitor last triggered a retraining


@dataclass
class Verdict:
    model: str
    version: str
    since: str
    labelled: int
    metric: str | None
    value: float | None
    psi: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # empty: healthy
    notes: list[str] = field(default_factory=list)

    @property
    def triggered(self) -> bool:
        return bool(self.reasons)


def check(log_dir: Path, name: str, manifest: Manifest, version: str, since: dt.datetime, *, metric: str | None,
          threshold: float | None, psi_above: float | None, min_labelled: int) -> Verdict:
    """Quality of ``version`` (all its variants together) and the PSI of its logged inputs since ``since``."""
    store = LocalStore(log_dir)
    report = QualityMonitor(store).report(name, since)
    groups = [g for g in report["versions"] if g["version"] == version]
    labelled = sum(g["labelled"] for g in groups)
    verdict = Verdict(name, version, since.isoformat(), labelled, metric, None)
    if metric is not None and threshold is not None:
        if labelled < min_labelled:
            verdict.notes.append(f"{labelled} labelled predictions of version {version}: fewer than "
                                 f"--min-labelled {min_labelled}, quality not judged")
        else:
            value = _pooled(groups, metric)
            verdict.value = value
            if value is None:
                verdict.notes.append(f"{metric} is undefined on these labels")
            elif (value < threshold) if HIGHER_IS_BETTER[metric] else (value > threshold):
                worse = "below" if HIGHER_IS_BETTER[metric] else "above"
                verdict.reasons.append(f"{metric} {value:.4g} is {worse} {threshold:g} over {labelled} labels")
    if psi_above is not None:
        reference = DriftReference.from_manifest(manifest)
        rows = _logged_inputs(store, name, version, since, reference.features if reference else [])
        if reference is None:
            verdict.notes.append("the manifest records no training quantiles: no drift check")
        elif len(rows) < min_labelled:
            verdict.notes.append(f"{len(rows)} logged rows: fewer than {min_labelled}, drift not judged")
        else:
            psi = reference.psi(rows)
            verdict.psi = {f: float(v) for f, v in zip(reference.features, psi.tolist(), strict=True)}
            drifted = {f: v for f, v in verdict.psi.items() if v > psi_above}
            if drifted:
                verdict.reasons.append("input drift: " + ", ".join(f"{f} PSI {v:.3g}" for f, v in drifted.items())
                                       + f" above {psi_above:g} over {len(rows)} rows")
    return verdict


def _pooled(groups: list[dict], metric: str) -> float | None:
    """A labelled-rows-weighted mean of the variants' values (one variant: its value)."""
    pairs = [(g["metrics"][metric], g["labelled"]) for g in groups if metric in g["metrics"]]
    if not pairs:
        return None
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)


def _logged_inputs(store: LocalStore, name: str, version: str, since: dt.datetime, features: list[str]
                   ) -> np.ndarray:
    frames = []
    for part in store.parts(name, PAYLOAD, since.date()):
        table = pq.read_table(store.path(part))
        columns, _, _ = read_metadata(table.schema)
        wanted = [columns.get(f, f) for f in features]
        if not all(c in table.column_names for c in wanted):
            continue
        frame = table.select(["version", "timestamp", *wanted]).to_pandas()
        frame = frame[(frame["version"] == version) & (frame["timestamp"] >= pd.Timestamp(since))]
        frames.append(frame[wanted].to_numpy(dtype=np.float64))
    return np.concatenate(frames) if frames else np.empty((0, len(features)))


def last_triggered(log_dir: Path, name: str) -> float | None:
    try:
        return float(json.loads((log_dir / name / STATE).read_text())["retrained_at"])
    except (OSError, ValueError, KeyError):
        return None


def record_trigger(log_dir: Path, name: str, verdict: Verdict) -> None:
    path = log_dir / name / STATE
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps({"retrained_at": time.time(), "reasons": verdict.reasons}))
    temp.replace(path)
