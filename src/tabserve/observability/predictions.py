"""The distribution of what a model predicts: counts per class, or a histogram of regression values.

A Prometheus histogram needs its buckets up front, and the manifest records no distribution of the target
or of the predictions. So a regressor's buckets are the quantiles (0, 1, 5, 10, 25, 50, 75, 90, 95, 99 and
100 %) of its own predictions on rows drawn from the training quantiles of each feature, computed once when
the version is loaded, rounded to 3 significant digits: under no drift each bucket holds roughly its share.
Features are drawn independently, so for correlated features these are bucket edges, not a reference to
measure drift against. A manifest whose ``training`` records ``prediction_quantiles`` ({probs, values}, e.g.
of the holdout predictions) is used instead. Each version gets its own buckets: one histogram object per
version under one metric name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import Counter, Histogram

from tabserve.core.model import Model
from tabserve.observability.drift import training_sample
from tabserve.observability.tally import Direct, Observer

PROBS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
SAMPLE_ROWS = 1000
# No sample to draw from (a feature without statistics): decades on both sides of zero.
FALLBACK_BUCKETS = tuple(sorted({s * 10.0 ** e for s in (-1, 1) for e in range(-3, 7)} | {0.0}))


class PredictionRecorder:
    """Records a batch's predicted values; ``histogram`` is set for regressors."""

    histogram: Histogram | None = None

    def record(self, values: np.ndarray) -> None:
        raise NotImplementedError


class ClassCounts(PredictionRecorder):
    def __init__(self, counter: Counter, name: str, version: str, classes: list[Any]) -> None:
        self._labels = (name, version)
        self._counter = counter
        # Every class is shown from the start, at 0: a class never predicted is visible as such.
        self._children = {c: counter.labels(name, version, str(c)) for c in classes}

    def _child(self, label: Any) -> Any:
        child = self._children.get(label)
        if child is None:
            child = self._children[label] = self._counter.labels(*self._labels, str(label))
        return child

    def record(self, values: np.ndarray) -> None:
        if values.shape[0] == 1:
            self._child(values[0]).inc()
            return
        labels, counts = np.unique(values, return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            self._child(label).inc(count)


class ValueHistogram(PredictionRecorder):
    def __init__(self, name: str, version: str, buckets: tuple[float, ...],
                 tally: Callable[[Any], Observer] = Direct) -> None:
        self.histogram = Histogram("tabserve_prediction_value", "Predicted values (regressors); buckets per "
                                   "version from its predictions on training-like rows", ["model", "version"],
                                   buckets=buckets, registry=None)
        self._child = self.histogram.labels(name, version)
        self._values = tally(self._child)

    def record(self, values: np.ndarray) -> None:
        self._values.extend(values)


def prediction_recorder(model: Model, class_counter: Counter,
                        tally: Callable[[Any], Observer] = Direct) -> PredictionRecorder:
    """``tally``: how a histogram child is observed (``Metrics.tally``)."""
    if model.is_classifier:
        return ClassCounts(class_counter, model.name, model.version, list(model.classes or []))
    return ValueHistogram(model.name, model.version, prediction_buckets(model), tally)


def prediction_buckets(model: Model) -> tuple[float, ...]:
    recorded = model.manifest.training.get("prediction_quantiles")
    if isinstance(recorded, dict) and recorded.get("values"):
        edges = np.asarray(recorded["values"], dtype=np.float64)
    else:
        sample = training_sample(model.manifest, SAMPLE_ROWS)
        if sample is None:
            return FALLBACK_BUCKETS
        try:
            predicted = np.asarray(model.predict(sample), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a sample the model refuses: fall back rather than fail the load
            return FALLBACK_BUCKETS
        predicted = predicted[np.isfinite(predicted)]
        if predicted.size == 0:
            return FALLBACK_BUCKETS
        edges = np.quantile(predicted, PROBS)
    rounded = sorted({float(f"{e:.3g}") for e in edges.tolist() if np.isfinite(e)})
    return tuple(rounded) or FALLBACK_BUCKETS
