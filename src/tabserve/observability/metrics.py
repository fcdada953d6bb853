"""Prometheus metrics, exposed at ``/metrics``: requests, batches, models, predictions, input drift.

One ``Metrics`` per app, with its own registry (tests build many apps in one process). With several uvicorn
workers, values live in prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, prepared by
``tabserve serve`` with ``prepare_multiprocess_dir``) and whichever worker answers a scrape adds up all of
them. Recording is cheap by design: per request, a dict lookup, a counter and a histogram; per onnxruntime
call, a few more and one slice copy of the rows for drift; PSI is computed only when scraped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.observability.drift import DriftReference, DriftWindow, drift_by_version, shared_windows
from tabserve.observability.logging import get_logger
from tabserve.observability.multiproc import (
    MULTIPROC_ENV,
    install_reserved_storage,
    mark_unshared,
    process_families,
    storage_degraded,
    storage_failed,
    storage_failures,
)
from tabserve.observability.predictions import PredictionRecorder, prediction_recorder
from tabserve.observability.tally import Direct, Observer, Tally
from tabserve.settings import Settings

METRICS_PATH = "/metrics"  # never rate-limited nor shed: a scrape must see an overloaded server
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_VARIANT = "default"  # the traffic variant label until A/B routing sets ``scope["state"]["variant"]``
UNMATCHED_ROUTE = "unmatched"  # 404s: the raw path would make one series per scanner probe
# 0.1 ms to 10 s: a one-row request takes well under a millisecond, a large batch seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
DIFF_BUCKETS = (1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
BatchRecorder = Callable[[int, float, ModelInput, Prediction], None]


class Metrics:
    """The server's metrics. ``multiproc_dir``: the folder shared by the workers, None for one process."""

    def __init__(self, *, drift_window_rows: int = 1000, multiproc_dir: str | os.PathLike[str] | None = None
                 ) -> None:
        self.multiproc_dir = Path(multiproc_dir) if multiproc_dir else None
        if self.multiproc_dir is not None:
            # The values created from here on go to the shared files (prometheus_client may have chosen
            # in-memory values when imported, before the variable was set), with their disk blocks reserved.
            install_reserved_storage()
        self.drift_window_rows = drift_window_rows
        # No *_created series: the multiprocess collector has none, so one worker or several expose the same
        # names (prometheus_client's switch is process-wide; it only drops those timestamps).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        model_labels = ["model", "version"]
        self.requests = Counter("tabserve_requests", "Requests answered, by route template (a gRPC call: its method "
                                "path) and status (a gRPC call: the HTTP status REST answers for the same outcome)",
                                ["route", "status", "model", "version", "variant", "protocol"], registry=r)
        self.request_duration = Histogram(
            "tabserve_request_duration_seconds", "Whole request, from arrival to the last byte sent",
            ["route", "model", "version", "variant", "protocol"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("tabserve_requests_in_flight", "HTTP requests being answered",
                               registry=r, multiprocess_mode="livesum")
        self.queue_wait = Histogram(
            "tabserve_queue_wait_seconds", "Wait in the micro-batcher's queue before an onnxruntime call (the "
            "oldest request of each batch)", model_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("tabserve_inference_duration_seconds", "One onnxruntime call",
                                   model_labels, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("tabserve_batch_rows", "Rows scored per onnxruntime call", model_labels,
                                    buckets=BATCH_ROWS_BUCKETS, registry=r)
        self.rows_scored = Counter("tabserve_rows_scored", "Rows scored", model_labels, registry=r)
        self.model_info = Gauge("tabserve_model_info", "1 for each model version served, 0 once replaced or unloaded",
                                [*model_labels, "task", "features", "sha256"], registry=r,
                                multiprocess_mode="livemax")
        self.model_from_cache = Gauge(
            "tabserve_model_served_from_cache", "1 while a version is served from the local cache because the "
            "registry could not be reached (the version served last; swapped for the registry's answer once it "
            "is back)", model_labels, registry=r, multiprocess_mode="livemax")
        self.model_load = Gauge("tabserve_model_load_seconds", "Time to read, verify, load and warm a version",
                                model_labels, registry=r, multiprocess_mode="max")
        self.class_predictions = Counter("tabserve_predictions", "Predicted classes (classifiers)",
                                         [*model_labels, "class"], registry=r)
        self.rate_limited_total = Counter("tabserve_rate_limited", "Requests refused by a rate limit (429)",
                                          ["key_kind"], registry=r)
        self.shed_total = Counter("tabserve_shed", "Requests shed before any work, by reason", ["reason"],
                                  registry=r)
        self.load_failures = Counter("tabserve_model_load_failures", "Versions that failed to resolve, download, "
                                     "verify or load (the previous version kept serving)", ["model"], registry=r)
        self.shadow_rows = Counter("tabserve_shadow_rows", "Rows scored by a shadow version and compared",
                                   ["model", "shadow_version"], registry=r)
        self.shadow_abs_diff = Histogram(
            "tabserve_shadow_abs_diff", "Per row |answer - shadow| (classifiers: the largest probability "
            "difference)", ["model", "shadow_version"], buckets=DIFF_BUCKETS, registry=r)
        self.shadow_rel_diff = Histogram(
            "tabserve_shadow_rel_diff", "Per row |answer - shadow| / |answer|", ["model", "shadow_version"],
            buckets=DIFF_BUCKETS, registry=r)
        self.shadow_disagreements = Counter("tabserve_shadow_label_disagreements", "Rows whose shadow label "
                                            "differs from the answer", ["model", "shadow_version"], registry=r)
        self.shadow_dropped_total = Counter("tabserve_shadow_dropped", "Shadow copies dropped: the shadow queue was "
                                      "full", ["model"], registry=r)
        # One process: histograms are tallied and folded at each scrape (observability/tally.py), the in-flight
        # gauge read from a counter when scraped; several: every value goes to the shared files at once.
        self.deferred = self.multiproc_dir is None
        self._tallies: list[Observer] = []
        self._in_flight_now = 0
        if self.deferred:
            self.in_flight.set_function(lambda: self._in_flight_now)
        self._requests: dict[tuple[Any, ...], Observer] = {}
        self._models: dict[tuple[str, str], _ModelSeries] = {}
        self.log = get_logger("tabserve.metrics")

    @classmethod
    def from_settings(cls, settings: Settings) -> Metrics:
        folder = os.environ.get(MULTIPROC_ENV) if settings.metrics else None
        if settings.metrics and folder is None and (settings.metrics_dir or settings.workers > 1):
            mark_unshared()  # tabserve serve could not prepare the folder (logged there): say so at /metrics
        return cls(drift_window_rows=settings.drift_window_rows, multiproc_dir=folder)

    # -- requests (RequestContextMiddleware) ---------------------------------------------------------------

    def request_started(self) -> None:
        if self.deferred:
            self._in_flight_now += 1
        else:
            self.in_flight.inc()

    def request_ended(self) -> None:
        if self.deferred:
            self._in_flight_now -= 1
        else:
            self.in_flight.dec()

    def request_finished(self, route: str | None, status: int, model: str | None, version: str | None,
                         variant: str | None, seconds: float, protocol: str = "http") -> None:
        key = (route, status, model, version, variant, protocol)
        series = self._requests.get(key)
        if series is None:
            series = self._request_series(key)
        series.observe(seconds)

    def _request_series(self, key: tuple[Any, ...]) -> Observer:
        route, status, model, version, variant, protocol = key
        route, model, version = route or UNMATCHED_ROUTE, model or "", version or ""
        variant = variant or DEFAULT_VARIANT
        series = self.tally(self.request_duration.labels(route, model, version, variant, protocol),
                            count=self.requests.labels(route, str(status), model, version, variant, protocol))
        self._requests[key] = series
        return series

    def tally(self, child: Any, count: Any = None, total: Any = None) -> Observer:
        """How ``child`` (a histogram's labelled child) is observed: tallied in one process, at once in several."""
        if not self.deferred:
            return Direct(child, count, total)
        tally = Tally(child, count, total)
        self._tallies.append(tally)
        return tally

    def fold(self) -> None:
        """Every tallied value into its histogram (before a scrape reads them)."""
        for tally in list(self._tallies):
            tally.fold()

    # -- hooks for admission control -----------------------------------------------------------------------

    def rate_limited(self, key_kind: str) -> None:
        """A request refused by a rate limit; ``key_kind`` says what the limit is keyed on (api_key, ip, ...)."""
        self.rate_limited_total.labels(key_kind).inc()

    def shed(self, reason: str) -> None:
        """A request shed before any work (overload, shutting down, ...)."""
        self.shed_total.labels(reason).inc()

    # -- models and batches (the model manager's observer) -------------------------------------------------

    def model_loaded(self, model: Model) -> None:
        series = self._series(model)
        series.open_drift()  # again, for a version unloaded then loaded back
        series.info.set(1)
        self.model_load.labels(model.name, model.version).set(model.load_seconds)
        cached = getattr(model, "served_from_cache", None) is not None  # set by the model's slot
        self.model_from_cache.labels(model.name, model.version).set(1 if cached else 0)

    def model_unloaded(self, model: Model) -> None:
        series = self._models.get((model.name, model.version))
        if series is not None:
            series.info.set(0)
            series.close_drift()
            self.model_from_cache.labels(model.name, model.version).set(0)

    def model_load_failed(self, name: str) -> None:
        self.load_failures.labels(name).inc()

    # -- shadow traffic (the traffic router's observer) ----------------------------------------------------

    def shadow_compared(self, name: str, shadow_version: str, abs_diff: np.ndarray, rel_diff: np.ndarray,
                        disagreements: int) -> None:
        self.shadow_rows.labels(name, shadow_version).inc(len(abs_diff))
        observe_abs = self.shadow_abs_diff.labels(name, shadow_version).observe
        observe_rel = self.shadow_rel_diff.labels(name, shadow_version).observe
        for a, b in zip(abs_diff.tolist(), rel_diff.tolist(), strict=True):
            observe_abs(a)
            observe_rel(b)
        if disagreements:
            self.shadow_disagreements.labels(name, shadow_version).inc(disagreements)

    def shadow_dropped(self, name: str) -> None:
        self.shadow_dropped_total.labels(name).inc()

    def batch_recorder(self, model: Model) -> BatchRecorder:
        """What the model's micro-batcher calls after each onnxruntime call: (rows, queue wait, input, output)."""
        return self._series(model).record

    def _series(self, model: Model) -> _ModelSeries:
        key = (model.name, model.version)
        series = self._models.get(key)
        if series is None:
            series = self._models[key] = _ModelSeries(self, model)
        return series

    # -- exposition ----------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self)  # type: ignore[arg-type]

    def collect(self) -> Iterator[Metric]:
        self.fold()
        if self.multiproc_dir is not None:
            yield from MultiProcessCollector(None, str(self.multiproc_dir)).collect()
            windows = list(shared_windows(self.multiproc_dir))
        else:
            yield from self.registry.collect()
            models = list(self._models.values())  # a scrape runs in a thread, a model may load meanwhile
            yield from _merged([s.predictions.histogram for s in models if s.predictions.histogram is not None])
            windows = [(drift.reference, drift.rows()) for drift in (s.drift for s in models) if drift is not None]
        yield from _drift_families(windows)
        yield from _storage_families()
        yield from process_families(self.multiproc_dir)  # CPU and memory of each worker (the dashboard's)

    def close(self) -> None:
        """At shutdown: this process's windows and live gauges stop counting in the other workers' scrapes."""
        for series in list(self._models.values()):
            series.close_drift()
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiproc_dir))


class _ModelSeries:
    """The label children and the drift window of one model version, resolved once."""

    def __init__(self, metrics: Metrics, model: Model) -> None:
        labels = (model.name, model.version)
        manifest = model.manifest
        self.info = metrics.model_info.labels(*labels, manifest.task, str(len(manifest.features)),
                                              manifest.model.sha256[:12])
        self.queue_wait = metrics.tally(metrics.queue_wait.labels(*labels))
        self.inference = metrics.tally(metrics.inference.labels(*labels))
        self.batch_rows = metrics.tally(metrics.batch_rows.labels(*labels), total=metrics.rows_scored.labels(*labels))
        self.predictions: PredictionRecorder = prediction_recorder(model, metrics.class_predictions,
                                                                   metrics.tally)
        self._reference = DriftReference.from_manifest(manifest) if metrics.drift_window_rows else None
        self._window = (metrics.drift_window_rows, metrics.multiproc_dir)
        self.drift: DriftWindow | None = None
        self.open_drift()
        self.log = metrics.log
        self._failed = False

    def record(self, rows: int, waited: float, x: ModelInput, pred: Prediction) -> None:
        try:
            self.batch_rows.observe(rows)  # and rows scored, their sum
            self.queue_wait.observe(waited)
            self.inference.observe(pred.latency_s)
            self.predictions.record(pred.values)
            drift = self.drift
            if drift is not None:
                drift.record(x if isinstance(x, np.ndarray) else x.numeric)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - metrics must never fail a prediction
            if not self._failed:
                self._failed = True
                self.log.error("metrics_record_failed", error=repr(exc))

    def open_drift(self) -> None:
        if self.drift is None and self._reference is not None:
            try:
                self.drift = DriftWindow(self._reference, *self._window)
            except OSError as exc:  # a full disk under the multiprocess folder: no drift for this version here
                storage_failed(exc, self._window[1])

    def close_drift(self) -> None:
        drift, self.drift = self.drift, None
        if drift is not None:
            drift.close()


def _merged(histograms: list[Histogram]) -> Iterator[Metric]:
    """Histograms of one name but different buckets (one per model version) as one metric family."""
    families = [family for h in histograms for family in h.collect()]
    if families:
        first = families[0]
        for other in families[1:]:
            first.samples.extend(other.samples)
        yield first


def _storage_families() -> Iterator[Metric]:
    """This process's own count (the worker answering the scrape): the multiprocess files cannot hold it."""
    degraded = GaugeMetricFamily("tabserve_metrics_degraded", "1 when the worker answering this scrape could "
                                 "not store some metric values in the multiprocess folder, or use it at all (a "
                                 "full disk): they are missing from these metrics")
    degraded.add_metric([], 1 if storage_degraded() else 0)
    yield degraded
    counted = CounterMetricFamily("tabserve_metrics_storage_failures", "Metric values (or drift windows) the "
                                  "worker answering this scrape could not store in the multiprocess folder")
    counted.add_metric([], storage_failures())
    yield counted


def _drift_families(windows: list[tuple[DriftReference, np.ndarray]]) -> Iterator[Metric]:
    psi = GaugeMetricFamily("tabserve_feature_psi", "Population stability index of each numeric feature: the "
                            "recent rows against the training quantiles (0.1: watch, 0.25: shifted)",
                            labels=["model", "version", "feature"])
    rows = GaugeMetricFamily("tabserve_drift_window_rows", "Recent rows the PSI is computed over (all workers)",
                             labels=["model", "version"])
    for reference, count, by_feature in drift_by_version(windows):
        rows.add_metric([reference.model, reference.version], count)
        if count:
            for feature, value in zip(reference.features, by_feature.tolist(), strict=True):
                psi.add_metric([reference.model, reference.version, feature], value)
    yield psi
    yield rows
