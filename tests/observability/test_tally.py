"""Tallied histograms (one process) expose exactly what observing each value would have."""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import Counter, Histogram

from tabserve.observability.metrics import LATENCY_BUCKETS
from tabserve.observability.tally import FOLD_EVERY, Tally


def _samples(histogram: Histogram) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for s in histogram.collect()[0].samples]


def test_a_tally_folds_into_the_same_buckets_sum_and_count_as_observe():
    values = np.random.default_rng(1).lognormal(-7, 2, size=3 * FOLD_EVERY + 17).tolist()
    values += [0.0001, 0.00025, 10.0, 11.0]  # on the bounds and past the last
    tallied = Histogram("t", "t", ["r"], buckets=LATENCY_BUCKETS, registry=None)
    counted = Counter("c", "c", ["r"], registry=None)
    direct = Histogram("t", "t", ["r"], buckets=LATENCY_BUCKETS, registry=None)
    tally = Tally(tallied.labels("a"), count=counted.labels("a"))
    for v in values:
        tally.observe(v)
        direct.labels("a").observe(v)
    tally.fold()
    got, want = _samples(tallied), _samples(direct)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for (_, _, g), (_, _, w) in zip(got, want, strict=True):
        assert g == w or abs(g - w) <= 1e-9 * abs(w)  # the sum, added in another order
    assert counted.labels("a")._value.get() == len(values)


def test_values_observed_while_another_thread_folds_are_each_counted_once():
    histogram = Histogram("t", "t", buckets=LATENCY_BUCKETS, registry=None)
    tally = Tally(histogram)
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            tally.fold()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for i in range(50_000):
        tally.observe(0.001 * (i % 7))
    stop.set()
    scraper.join()
    tally.fold()
    count = next(s.value for s in histogram.collect()[0].samples if s.name == "t_count")
    assert count == 50_000
