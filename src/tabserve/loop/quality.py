"""Live model quality: labelled predictions per version and variant, the task's metrics, an A/B verdict, and
the Prometheus gauges ``tabserve_model_quality{model,version,variant,metric}``.

``QualityMonitor`` recomputes every model's quality over the last ``window_s`` every ``interval_s`` in one
background thread: it reads only the log files published since its last pass (``reader.py``), then joins and
scores the window from memory. ``GET /api/v1/models/NAME/quality?since=`` computes the same on demand.

The A/B verdict compares each variant with the default one on a per-row score (correctness for a classifier,
absolute error for a regressor): the difference of the means with a 95% confidence interval from the normal
approximation (Welch's standard error), and the rows per variant a two-sided test at 5% needs to detect that
difference with 80% power (``(z_0.975 + z_0.8)^2 (s1^2 + s2^2) / d^2``), less those already labelled.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from tabserve.errors import InvalidInput
from tabserve.loop.metrics import (
    HIGHER_IS_BETTER,
    classification_metrics,
    per_row_score,
    regression_metrics,
)
from tabserve.loop.reader import DEFAULT_VARIANT, Joined, LogReader
from tabserve.loop.store import FEEDBACK, LogStore
from tabserve.observability.logging import get_logger

CONFIDENCE = 0.95
POWER = 0.8
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, default_s: float, now: dt.datetime | None = None) -> dt.datetime:
    """``7d``, ``24h``, ``30m``, an ISO date or date-time (UTC unless it says otherwise); None -> the default."""
    now = now or dt.datetime.now(dt.UTC)
    if text is None or text == "":
        return now - dt.timedelta(seconds=default_s)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - dt.timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"since={text[:64]!r} is neither an ISO date or date-time (2026-12-01, "
                           f"2026-12-01T08:00:00Z) nor a duration back from now (30m, 24h, 7d)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def quality_report(model: str, joined: Joined, since: dt.datetime) -> dict[str, Any]:
    frame = joined.frame
    groups = []
    for (version, variant), rows in sorted(frame.groupby(["version", "variant"], sort=False),
                                           key=lambda item: (str(item[0][0]), str(item[0][1]))):
        groups.append({"version": str(version), "variant": str(variant), "labelled": len(rows),
                       "metrics": _metrics(joined, rows)})
    return {"model": model, "since": since.isoformat(), "task": joined.task or None,
            "logged_predictions": joined.predictions, "labelled": len(frame), "feedback": joined.feedback,
            "unmatched_feedback": joined.unmatched, "versions": groups, "ab": ab_verdict(joined)}


def _metrics(joined: Joined, rows: Any) -> dict[str, float]:
    if joined.task == "classification":
        proba = None
        if "probabilities" in rows and rows["probabilities"].notna().all():
            proba = np.stack(rows["probabilities"].to_numpy()).astype(np.float64)
        return classification_metrics(rows["label"].to_numpy(), rows["prediction"].to_numpy(), proba,
                                      joined.classes)
    if joined.task == "regression":
        return regression_metrics(rows["label"].to_numpy(), rows["prediction"].to_numpy())
    return {}  # an anomaly detector's labels are logged and joined; it has no task metric here


def ab_verdict(joined: Joined) -> dict[str, Any] | None:
    """Each variant against the default one; None when the window has one variant."""
    frame = joined.frame
    variants = sorted(set(frame["variant"])) if len(frame) else []
    if len(variants) < 2:
        return None
    baseline = DEFAULT_VARIANT if DEFAULT_VARIANT in variants else variants[0]
    metric, scores = per_row_score(joined.task, frame["label"].to_numpy(), frame["prediction"].to_numpy())
    by_variant = {v: scores[(frame["variant"] == v).to_numpy()] for v in variants}
    base = by_variant[baseline]
    comparisons = [_compare(base, by_variant[v], v) for v in variants if v != baseline]
    return {"metric": metric, "higher_is_better": HIGHER_IS_BETTER[metric], "baseline": baseline,
            "method": "difference of means, normal approximation (Welch), 95% interval; sample size for 80% "
                      "power at a two-sided 5% level", "comparisons": comparisons}


def _compare(base: np.ndarray, other: np.ndarray, variant: str) -> dict[str, Any]:
    n1, n2 = len(base), len(other)
    out: dict[str, Any] = {"variant": variant, "labelled": n2, "baseline_labelled": n1,
                           "baseline_mean": float(base.mean()), "mean": float(other.mean())}
    diff = float(other.mean() - base.mean())
    out["difference"] = diff
    if n1 < 2 or n2 < 2:
        out.update(interval=None, significant=False, rows_needed_per_variant=None, rows_still_needed=None)
        return out
    v1, v2 = float(base.var(ddof=1)), float(other.var(ddof=1))
    se = math.sqrt(v1 / n1 + v2 / n2)
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    low, high = diff - z * se, diff + z * se
    out["interval"] = [low, high]
    out["significant"] = bool(low > 0 or high < 0)
    if diff == 0 or v1 + v2 == 0:
        needed = None
    else:
        z_power = NormalDist().inv_cdf(POWER)
        needed = math.ceil((z + z_power) ** 2 * (v1 + v2) / diff**2)
    out["rows_needed_per_variant"] = needed
    out["rows_still_needed"] = None if needed is None else max(0, needed - min(n1, n2))
    return out


class QualityMonitor:
    """Quality of every model under the store, refreshed in the background, exported as gauges."""

    def __init__(self, store: LogStore, *, window_s: float = 7 * 86400, interval_s: float = 60.0,
                 registry: CollectorRegistry | None = None, models: Callable[[], list[str]] | None = None) -> None:
        self.store = store
        self.reader = LogReader(store)
        self.window_s = window_s
        self.interval_s = interval_s
        self.models = models or store.models
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.gauge = Gauge("tabserve_model_quality", "Live quality from ground-truth feedback over the quality "
                           "window: each metric of the task per version and A/B variant", ["model", "version",
                           "variant", "metric"], registry=registry, multiprocess_mode="mostrecent")
        self.labelled = Gauge("tabserve_model_quality_labelled", "Predictions with a ground-truth label over the "
                              "quality window", ["model", "version", "variant"], registry=registry,
                              multiprocess_mode="mostrecent")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = get_logger("tabserve.quality")

    def report(self, model: str, since: dt.datetime) -> dict[str, Any]:
        return quality_report(model, self.reader.joined(model, since), since)

    def refresh(self) -> None:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.window_s)
        keep: set[str] = set()
        for model in self.models():
            # No labels, nothing to score: its payload files are not read (a server that logs without feedback
            # would pay ~0.2 us a logged row here, on every pass, for no gauge).
            if not self.store.parts(model, FEEDBACK, since.date()):
                continue
            payload, feedback = self.reader.refresh(model, since.date())
            keep.update(payload, feedback)
            report = self.report(model, since)
            for group in report["versions"]:
                labels = (model, group["version"], group["variant"])
                self.labelled.labels(*labels).set(group["labelled"])
                for metric, value in group["metrics"].items():
                    self.gauge.labels(*labels, metric).set(value)
        self.reader.forget_except(keep)

    def start(self) -> None:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="tabserve-quality", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a bad file must not stop the gauges for good
                self.log.error("quality_refresh_failed", error=repr(exc))
            if self._stop.wait(self.interval_s):
                return
