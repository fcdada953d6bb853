"""Live quality from the files: the join of the payload log and the feedback equals scikit-learn's metrics on
the same labels (1e-12), per version and variant, with an A/B verdict."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sklearn import metrics as skm

import tabserve
from tabserve.errors import InvalidInput
from tabserve.loop.feedback import append_feedback, parse_feedback
from tabserve.loop.payload import ParquetPayloadLog
from tabserve.loop.quality import QualityMonitor, parse_since
from tabserve.loop.store import LocalStore

from .conftest import record

DAY_AGO = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


def log_requests(store: LocalStore, model: tabserve.Model, X: np.ndarray, per_request: int,
                 variant_of=lambda i: None) -> list[tuple[str, int]]:
    """Predict X in requests of ``per_request`` rows; returns (request id, row) of each row of X."""
    log = ParquetPayloadLog(store)
    keys = []
    for start in range(0, len(X), per_request):
        rid = f"{model.name}-{start}"
        log.offer(*record(model, X[start:start + per_request].tolist(), rid, variant=variant_of(start)))
        keys += [(rid, j) for j in range(len(X[start:start + per_request]))]
    log.close()
    return keys


def send_labels(store: LocalStore, model: tabserve.Model, keys: list[tuple[str, int]], labels: list) -> None:
    items = [{"request_id": rid, "row": row, "label": label} for (rid, row), label in zip(keys, labels, strict=True)]
    append_feedback(store, model, parse_feedback({"feedback": items}, model, 100_000))


def noisy(truth: np.ndarray, classes: list, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = truth.copy()
    flip = rng.random(len(out)) < fraction
    out[flip] = rng.choice(classes, int(flip.sum()))
    return out


def test_multiclass_quality_equals_sklearn(tmp_path: Path, iris_model: tabserve.Model) -> None:
    from sklearn.datasets import load_iris

    X = load_iris().data
    store = LocalStore(tmp_path)
    keys = log_requests(store, iris_model, X, 7)
    truth = noisy(iris_model.predict(X).astype(str), iris_model.classes, 0.3, seed=1)
    send_labels(store, iris_model, keys, truth.tolist())
    report = QualityMonitor(store).report(iris_model.name, DAY_AGO)
    [group] = report["versions"]
    assert (group["version"], group["variant"], group["labelled"]) == (iris_model.version, "default", 150)
    predicted, proba = iris_model.predict(X).astype(str), iris_model.predict_proba(X)
    expected = {"accuracy": skm.accuracy_score(truth, predicted),
                "f1_macro": skm.f1_score(truth, predicted, average="macro"),
                "log_loss": skm.log_loss(truth, proba, labels=iris_model.classes),
                "roc_auc": skm.roc_auc_score(truth, proba, multi_class="ovr", labels=iris_model.classes)}
    assert group["metrics"].keys() == expected.keys()
    for name, value in expected.items():
        assert group["metrics"][name] == pytest.approx(value, abs=1e-12, rel=0), name
    assert report["ab"] is None and report["unmatched_feedback"] == 0


def test_binary_quality_equals_sklearn_per_variant(tmp_path: Path, colors_model: tabserve.Model) -> None:
    rng = np.random.default_rng(5)
    X = np.array([[s, c] for s, c in zip(rng.normal(size=400), rng.choice(["red", "green", "blue"], 400),
                                         strict=True)], dtype=object)
    X[:, 0] = X[:, 0].astype(float)
    store = LocalStore(tmp_path)
    keys = log_requests(store, colors_model, X, 10, variant_of=lambda i: "challenger" if i % 20 else None)
    truth = noisy(colors_model.predict(X).astype(str), ["no", "yes"], 0.4, seed=2)
    send_labels(store, colors_model, keys, truth.tolist())
    report = QualityMonitor(store).report(colors_model.name, DAY_AGO)
    variant = np.array(["challenger" if int(rid.rsplit("-", 1)[1]) % 20 else "default" for rid, _ in keys])
    predicted, proba = colors_model.predict(X).astype(str), colors_model.predict_proba(X)
    for group in report["versions"]:
        mask = variant == group["variant"]
        assert group["labelled"] == mask.sum() == 200
        t, p, pr = truth[mask], predicted[mask], proba[mask]
        expected = {"accuracy": skm.accuracy_score(t, p), "f1_macro": skm.f1_score(t, p, average="macro"),
                    "log_loss": skm.log_loss(t, pr, labels=colors_model.classes),
                    "roc_auc": skm.roc_auc_score(t == "yes", pr[:, 1])}
        for name, value in expected.items():
            assert group["metrics"][name] == pytest.approx(value, abs=1e-12, rel=0), name
    # A/B: challenger minus default accuracy, Welch's normal-approximation 95% interval, rows for 80% power
    [comparison] = report["ab"]["comparisons"]
    a = (truth == predicted)[variant == "default"].astype(float)
    b = (truth == predicted)[variant == "challenger"].astype(float)
    diff, se = b.mean() - a.mean(), math.sqrt(a.var(ddof=1) / 200 + b.var(ddof=1) / 200)
    z = NormalDist().inv_cdf(0.975)
    assert comparison["difference"] == pytest.approx(diff, abs=1e-12)
    assert comparison["interval"] == pytest.approx([diff - z * se, diff + z * se], abs=1e-12)
    needed = math.ceil((z + NormalDist().inv_cdf(0.8)) ** 2 * (a.var(ddof=1) + b.var(ddof=1)) / diff**2)
    assert comparison["rows_needed_per_variant"] == needed
    assert comparison["rows_still_needed"] == max(0, needed - 200)


def test_regression_quality_equals_sklearn(tmp_path: Path, demo_model: tabserve.Model) -> None:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 5))
    store = LocalStore(tmp_path)
    keys = log_requests(store, demo_model, X, 1)
    truth = demo_model.predict(X) + rng.normal(scale=20, size=300)
    send_labels(store, demo_model, keys, truth.tolist())
    [group] = QualityMonitor(store).report(demo_model.name, DAY_AGO)["versions"]
    predicted = demo_model.predict(X)
    expected = {"mae": skm.mean_absolute_error(truth, predicted),
                "rmse": math.sqrt(skm.mean_squared_error(truth, predicted)), "r2": skm.r2_score(truth, predicted)}
    for name, value in expected.items():
        assert group["metrics"][name] == pytest.approx(value, abs=1e-12, rel=1e-14), name


def test_the_last_label_wins_and_unmatched_labels_are_counted(tmp_path: Path, iris_model: tabserve.Model) -> None:
    store = LocalStore(tmp_path)
    keys = log_requests(store, iris_model, np.array([[5.1, 3.5, 1.4, 0.2]]), 1)  # predicted setosa
    send_labels(store, iris_model, keys, ["virginica"])
    time.sleep(0.002)  # a later received_at
    send_labels(store, iris_model, keys + [("never-logged", 0)], ["setosa", "setosa"])
    report = QualityMonitor(store).report(iris_model.name, DAY_AGO)
    assert report["versions"][0]["metrics"]["accuracy"] == 1.0
    assert (report["labelled"], report["feedback"], report["unmatched_feedback"]) == (1, 2, 1)


def test_window_excludes_older_predictions(tmp_path: Path, demo_model: tabserve.Model) -> None:
    store = LocalStore(tmp_path)
    log = ParquetPayloadLog(store)
    log.offer(*record(demo_model, [[0.0] * 5], "old", when=time.time() - 3 * 86400))
    log.offer(*record(demo_model, [[1.0] * 5], "new"))
    log.close()
    send_labels(store, demo_model, [("old", 0), ("new", 0)], [1.0, 2.0])
    monitor = QualityMonitor(store)
    assert monitor.report(demo_model.name, DAY_AGO)["labelled"] == 1
    assert monitor.report(demo_model.name, DAY_AGO - dt.timedelta(days=7))["labelled"] == 2


def test_gauges_are_refreshed_from_new_files_only(tmp_path: Path, demo_model: tabserve.Model) -> None:
    store = LocalStore(tmp_path)
    registry = CollectorRegistry()
    monitor = QualityMonitor(store, registry=registry)
    keys = log_requests(store, demo_model, np.zeros((4, 5)), 2)
    send_labels(store, demo_model, keys, [0.0, 0.0, 0.0, 0.0])
    monitor.refresh()
    labels = {"model": demo_model.name, "version": demo_model.version, "variant": "default"}
    mae = registry.get_sample_value("tabserve_model_quality", {**labels, "metric": "mae"})
    assert mae == pytest.approx(abs(float(demo_model.predict(np.zeros((1, 5)))[0])))
    assert registry.get_sample_value("tabserve_model_quality_labelled", labels) == 4
    cached = dict(monitor.reader._tables)
    send_labels(store, demo_model, keys[:1], [1000.0])  # a correction arrives
    monitor.refresh()
    assert all(monitor.reader._tables[name] is table for name, table in cached.items())  # not read again
    assert registry.get_sample_value("tabserve_model_quality", {**labels, "metric": "mae"}) != mae


@pytest.mark.parametrize(("body", "message"), [
    ({"request_id": "r", "label": "tulip"}, "label 'tulip' is not a class of model"),
    ({"request_id": "r"}, "'label' is missing"),
    ({"request_id": "", "label": "setosa"}, "'request_id' must be the non-empty string"),
    ({"request_id": "r", "label": "setosa", "row": -1}, "'row' must be the row's index"),
    ({"feedback": []}, "'feedback' must be a non-empty list"),
    ({"feedback": [{"request_id": "r", "label": "setosa"}, {"request_id": "s", "label": True}]},
     "feedback\\[1\\]: label True is not a class"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_classifier_feedback_names_the_problem(iris_model: tabserve.Model, body: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_feedback(body, iris_model, 100)


@pytest.mark.parametrize("label", ["12", float("nan"), None, True])
def test_regression_labels_must_be_finite_numbers(demo_model: tabserve.Model, label: object) -> None:
    with pytest.raises(InvalidInput, match="is not a finite number"):
        parse_feedback({"request_id": "r", "label": label}, demo_model, 100)


def test_since_takes_durations_and_dates() -> None:
    now = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
    assert parse_since("24h", 0, now) == now - dt.timedelta(hours=24)
    assert parse_since("2026-12-01", 0, now) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert parse_since(None, 3600, now) == now - dt.timedelta(hours=1)
    with pytest.raises(InvalidInput, match="neither an ISO date"):
        parse_since("last week", 0, now)


def test_labels_read_back_as_pandas(tmp_path: Path, iris_model: tabserve.Model) -> None:
    store = LocalStore(tmp_path)
    send_labels(store, iris_model, [("a", 0), ("b", 3)], ["setosa", "virginica"])
    [name] = store.parts(iris_model.name, "feedback")
    frame = pd.read_parquet(store.path(name))
    assert frame[["request_id", "row", "label"]].values.tolist() == [["a", 0, "setosa"], ["b", 3, "virginica"]]
