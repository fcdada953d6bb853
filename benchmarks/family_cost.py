"""What exactness costs, every family: one row through tabserve's exact export and through skl2onnx's float32
export of the same model, in onnxruntime and over HTTP (issue #16: within 1.5x of skl2onnx where it has one).

    taskset -c 0 .venv/bin/python benchmarks/family_cost.py [--families SVC,KNN-reg] [--list] [--no-http]
        [--rows 2000] [--classes 3] [--rounds 5] [--repeat 2000] [--requests 2000]

Models: StandardScaler + one estimator (MultinomialNB and the log1p pipeline take ``|x|`` without a scaler;
the preprocessing pipelines are the steps named), fitted on 80% of ``make_regression`` /
``make_classification`` (``--rows`` rows, 8 features, ``--classes`` classes; PoissonRegressor and
TweedieRegressor get a positive target). Meta-estimators are measured where their exact converter exists.

In process: export_cost.py's method. onnxruntime's latency of 1 row, every output fetched, one thread;
each latency is the median of ``--repeat`` runs (fewer for a graph slower than 0.1 ms, about 0.2 s of them),
the two exports are measured in turns ``--rounds`` times and the best median of each is kept, so that a
burst of load on a shared machine does not land on one side only. Ratio: exact / skl2onnx; nodes: the
graphs' top-level nodes (a ``Loop`` counts one). Error: the exact export's max relative error against the
model (values or probabilities) and label mismatches, on the held-out rows plus up to 2000 adversarial rows
(the parity check ``tabserve import`` runs); the float32 export's on the held-out rows, for scale.

Over HTTP: both exports written as bundles (the float one takes float32 input; its manifest records no
parity, it would not pass 1e-9) and served by one ``tabserve serve`` (one worker, access log and metrics on,
as by default): the exact one as ``exact``, the float one as ``float``. One keep-alive connection per model
sends ``POST /api/v1/models/{name}/predict`` with one held-out row, ``--requests`` times each (at least 200,
else about 8 s of them: skl2onnx's k-NN takes 10-25 ms), one request to each model in turn; p50 and p99 are
over all of them. The server runs on whatever cores this script is pinned to (with ``taskset -c 0``, the
same core as the client: requests are sequential).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from export_cost import median_s, session
from procs import free_port
from sklearn import discriminant_analysis as da
from sklearn import ensemble, linear_model, naive_bayes, neighbors, neural_network, svm
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    PolynomialFeatures,
    QuantileTransformer,
    SplineTransformer,
    StandardScaler,
)

from tabserve.core.bundle import write_bundle
from tabserve.core.manifest import Feature
from tabserve.errors import ExportError
from tabserve.training.describe import build_manifest, feature_entries
from tabserve.training.export import ExportedModel, export_onnx, export_skl2onnx
from tabserve.training.parity import check, compare, onnx_outputs, source_outputs

N_FEATURES = 8


@dataclass(frozen=True)
class Family:
    task: str  # regression | positive (a regression on a positive target) | classification
    make: Callable[[], Any]  # the unfitted model
    non_negative: bool = False  # fitted on |x|


def scaled(estimator: Any) -> Pipeline:
    return make_pipeline(StandardScaler(), estimator)


LR = linear_model.LogisticRegression
FAMILIES: dict[str, Family] = {
    "Poisson": Family("positive", lambda: scaled(linear_model.PoissonRegressor())),
    "Tweedie": Family("positive", lambda: scaled(linear_model.TweedieRegressor(power=1.5, link="log"))),
    "SGD-log": Family(
        "classification", lambda: scaled(linear_model.SGDClassifier(loss="log_loss", random_state=0))
    ),
    "RidgeClassifier": Family("classification", lambda: scaled(linear_model.RidgeClassifier())),
    "LinearSVC": Family("classification", lambda: scaled(svm.LinearSVC(random_state=0))),
    "MLPRegressor": Family(
        "regression",
        lambda: scaled(neural_network.MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0)),
    ),
    "MLPClassifier": Family(
        "classification",
        lambda: scaled(neural_network.MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)),
    ),
    "GaussianNB": Family("classification", lambda: scaled(naive_bayes.GaussianNB())),
    "MultinomialNB": Family("classification", lambda: naive_bayes.MultinomialNB(), non_negative=True),
    "LDA": Family("classification", lambda: scaled(da.LinearDiscriminantAnalysis())),
    "QDA": Family("classification", lambda: scaled(da.QuadraticDiscriminantAnalysis())),
    "SVC": Family("classification", lambda: scaled(svm.SVC())),
    "SVC-proba": Family("classification", lambda: scaled(svm.SVC(probability=True, random_state=0))),
    "SVR": Family("regression", lambda: scaled(svm.SVR())),
    "KNN-clf": Family("classification", lambda: scaled(neighbors.KNeighborsClassifier())),
    "KNN-reg": Family("regression", lambda: scaled(neighbors.KNeighborsRegressor())),
    "NearestCentroid": Family("classification", lambda: scaled(neighbors.NearestCentroid())),
    "PCA+LR": Family("classification", lambda: make_pipeline(StandardScaler(), PCA(5, random_state=0), LR())),
    "Poly+Ridge": Family(
        "regression", lambda: make_pipeline(StandardScaler(), PolynomialFeatures(2), linear_model.Ridge())
    ),
    "KBins+LR": Family(
        "classification",
        lambda: make_pipeline(
            KBinsDiscretizer(
                5, encode="onehot-dense", strategy="quantile", quantile_method="averaged_inverted_cdf"
            ),
            LR(),
        ),
    ),
    "Quantile+Ridge": Family(
        "regression", lambda: make_pipeline(QuantileTransformer(n_quantiles=100), linear_model.Ridge())
    ),
    "Spline+Ridge": Family("regression", lambda: make_pipeline(SplineTransformer(), linear_model.Ridge())),
    "log1p+Ridge": Family(
        "regression",
        lambda: make_pipeline(FunctionTransformer(np.log1p), linear_model.Ridge()),
        non_negative=True,
    ),
    # meta-estimators: measured where the exact converter exists (otherwise a row says it is missing)
    "Voting-clf": Family(
        "classification",
        lambda: scaled(
            ensemble.VotingClassifier(
                [("lr", LR()), ("nb", naive_bayes.GaussianNB())], voting="soft", flatten_transform=False
            )
        ),
    ),
    "Voting-reg": Family(
        "regression",
        lambda: scaled(
            ensemble.VotingRegressor(
                [("ridge", linear_model.Ridge()), ("knn", neighbors.KNeighborsRegressor())]
            )
        ),
    ),
    "Stacking-clf": Family(
        "classification",
        lambda: scaled(ensemble.StackingClassifier([("lr", LR()), ("nb", naive_bayes.GaussianNB())], LR())),
    ),
    "Stacking-reg": Family(
        "regression",
        lambda: scaled(
            ensemble.StackingRegressor(
                [("ridge", linear_model.Ridge()), ("knn", neighbors.KNeighborsRegressor())],
                linear_model.Ridge(),
            )
        ),
    ),
    "Bagging-clf": Family(
        "classification", lambda: scaled(ensemble.BaggingClassifier(n_estimators=10, random_state=0))
    ),
    "Bagging-reg": Family(
        "regression", lambda: scaled(ensemble.BaggingRegressor(n_estimators=10, random_state=0))
    ),
    "Calibrated": Family(
        "classification", lambda: scaled(CalibratedClassifierCV(svm.LinearSVC(random_state=0), cv=3))
    ),
    "AdaBoost": Family(
        "classification", lambda: scaled(ensemble.AdaBoostClassifier(n_estimators=50, random_state=0))
    ),
    "OneVsRest": Family("classification", lambda: scaled(OneVsRestClassifier(LR()))),
}


def data(family: Family, rows: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    if family.task == "classification":
        X, y = make_classification(
            n_samples=rows,
            n_features=N_FEATURES,
            n_informative=6,
            n_redundant=0,
            n_classes=classes,
            random_state=0,
        )
    else:
        X, y = make_regression(n_samples=rows, n_features=N_FEATURES, noise=1.0, random_state=0)
        if family.task == "positive":
            y = np.exp(y / (2 * y.std()))
    return (np.abs(X) if family.non_negative else X), y


def float_export(model: Any, task: str) -> ExportedModel:
    """skl2onnx's float32 graph as tabserve's fallback makes it. The fallback asks every classifier for
    ``zipmap=False``, an option skl2onnx's LinearSVC converter lacks (it has no ZipMap): there it is
    dropped."""
    import skl2onnx

    convert = skl2onnx.convert_sklearn

    def without_zipmap(*args: Any, options: dict[int, dict[str, Any]], **kwargs: Any) -> Any:
        options = {k: {o: v for o, v in opts.items() if o != "zipmap"} for k, opts in options.items()}
        return convert(*args, options=options, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skl2onnx reads SVC's deprecated probA_
        try:
            return export_skl2onnx(model, N_FEATURES, task)  # type: ignore[arg-type]
        except ExportError as exc:
            if "Option 'zipmap' not in" not in str(exc):
                raise
        with mock.patch.object(skl2onnx, "convert_sklearn", without_zipmap):
            return export_skl2onnx(model, N_FEATURES, task)  # type: ignore[arg-type]


# -- in process ----------------------------------------------------------------------------------------------


def one_row_us(
    exports: dict[str, ExportedModel], row: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    sessions = {k: session(e) for k, e in exports.items()}
    feeds = {k: {"X": row.astype(e.input["dtype"])} for k, e in exports.items()}  # type: ignore[index]
    repeat = {
        k: min(args.repeat, max(50, int(0.2 / median_s(lambda: s.run(None, feeds[k]), 20))))  # noqa: B023
        for k, s in sessions.items()
    }  # a slow graph (skl2onnx's k-NN: 10 ms) gets fewer runs, ~0.2 s
    best = dict.fromkeys(exports, np.inf)
    for _ in range(args.rounds):
        for k, sess in sessions.items():
            best[k] = min(best[k], median_s(lambda: sess.run(None, feeds[k]), repeat[k]))  # noqa: B023
    return {k: t * 1e6 for k, t in best.items()}


def float_error(model: Any, exported: ExportedModel, features: list[Feature], frame: pd.DataFrame) -> str:
    """skl2onnx's max relative error on the held-out rows, for scale (its probabilities, if it has them)."""
    expected, actual = source_outputs(model, frame), onnx_outputs(exported, frame, features)
    if expected.numbers.shape != actual.numbers.shape:  # labels-only model: skl2onnx adds scores
        actual = type(actual)(actual.values, None, labels_only=True)
    parity = compare(expected, actual, list(range(len(frame))), rtol=0, atol=0)
    return f"{parity.max_rel_diff:.0e}" + (
        f" ({parity.label_mismatches} labels)" if parity.label_mismatches else ""
    )


# -- over HTTP -----------------------------------------------------------------------------------------------


def write(
    dest: Path,
    name: str,
    exported: ExportedModel,
    model: Any,
    features: list[Feature],
    frame: pd.DataFrame,
    task: str,
    parity: Any,
) -> Path:
    classes = [c.item() for c in model.classes_] if task == "classification" else None
    manifest = build_manifest(
        name=name,
        version="1",
        task=task,
        features=feature_entries(features, frame),  # type: ignore[arg-type]
        exported=exported,
        parity=parity,
        metrics={},
        training={"benchmark": "family_cost"},
        source="benchmarks/family_cost.py",
        classes=classes,
    )
    if exported.exporter.startswith("skl2onnx"):
        del manifest["parity"]  # a float32 graph: its parity was not checked at 1e-9
    return write_bundle(dest / name, exported.onnx_bytes, manifest)


def start_server(bundles: dict[str, Path], home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    more = [f"--model={k}={p}" for k, p in bundles.items() if k != "exact"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tabserve",
            "serve",
            str(bundles["exact"]),
            *more,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "TABSERVE_HOME": str(home)},
        stdout=(home / "server.log").open("a"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {home / 'server.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server was not ready within 120 s")


def http_latency(
    port: int, names: list[str], row: list[float], args: argparse.Namespace
) -> dict[str, list[float]]:
    body = json.dumps({"data": row}).encode()
    conns = {n: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for n in names}
    headers = {"Content-Type": "application/json"}

    def post(name: str) -> float:
        t0 = time.perf_counter()
        conns[name].request("POST", f"/api/v1/models/{name}/predict", body, headers)
        resp = conns[name].getresponse()
        answer = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"{name}: HTTP {resp.status}: {answer[:300]!r}")
        return elapsed

    warm = {name: sorted(post(name) for _ in range(50))[25] for name in names}
    # one request to each model in turn, so that a burst of load lands on both; slow models (skl2onnx's
    # k-NN: 10-25 ms a row) get fewer requests, about 8 s of them
    n = min(args.requests, max(200, int(8 / sum(warm.values()))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n):
        for name in names:
            samples[name].append(post(name))
    for conn in conns.values():
        conn.close()
    return samples


def served(
    model: Any,
    exports: dict[str, ExportedModel],
    features: list[Feature],
    frame: pd.DataFrame,
    task: str,
    parity: Any,
    args: argparse.Namespace,
) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="tabserve-family-") as tmp:
        home = Path(tmp)
        names = {"tabserve": "exact", "skl2onnx": "float"}
        bundles = {
            names[k]: write(home / "bundles", names[k], e, model, features, frame, task, parity)
            for k, e in exports.items()
        }
        proc, port = start_server(bundles, home)
        try:
            samples = http_latency(port, list(bundles), frame.iloc[0].tolist(), args)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    by_export = {k: samples[n] for k, n in names.items() if n in samples}
    return {
        k: (float(np.percentile(s, 50)) * 1e3, float(np.percentile(s, 99)) * 1e3)
        for k, s in by_export.items()
    }


# -- one family ----------------------------------------------------------------------------------------------


def measure(name: str, family: Family, args: argparse.Namespace) -> str:
    X, y = data(family, args.rows, args.classes)
    split = int(len(X) * 0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and future-default warnings of the fits
        model = family.make().fit(X[:split], y[:split])
    task = "classification" if family.task == "classification" else "regression"
    features = [Feature(name=f"x{i}", dtype="float64", allow_missing=False) for i in range(N_FEATURES)]
    frame = pd.DataFrame(X[split:], columns=[f.name for f in features])
    try:
        exports = {"tabserve": export_onnx(model, features, task)}  # type: ignore[arg-type]
    except ExportError as exc:
        return f"| {name} | no exact converter yet: {str(exc)[:120]} |"
    note = ""
    try:
        exports["skl2onnx"] = float_export(model, task)
    except ExportError as exc:
        note = f" (skl2onnx: {str(exc).split(': ', 1)[-1][:80]})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "X does not have valid feature names" from the parity rows
        parity, _ = check(model, exports["tabserve"], features, frame, np.arange(len(frame)))
        float32 = float_error(model, exports["skl2onnx"], features, frame) if "skl2onnx" in exports else "-"
    us = one_row_us(exports, X[split : split + 1], args)
    http = served(model, exports, features, frame, task, parity, args) if args.http else {}
    nodes = " / ".join(str(len(onnx.load_from_string(e.onnx_bytes).graph.node)) for e in exports.values())
    mine, theirs = us["tabserve"], us.get("skl2onnx")
    ratio = f"**{mine / theirs:.3g}x**" if theirs else "-"  # 3 digits: skl2onnx's k-NN is 1000x slower
    p50 = {k: v[0] for k, v in http.items()}
    return " | ".join(
        [
            f"| {name}",
            f"{mine:.1f}",
            f"{theirs:.1f}" if theirs else "no converter",
            ratio,
            nodes,
            " / ".join(f"{p50[k]:.2f}" for k in ("tabserve", "skl2onnx") if k in p50) or "-",
            f"{p50['tabserve'] / p50['skl2onnx']:.3g}x" if len(p50) == 2 else "-",
            f"{http['tabserve'][1]:.2f}" if http else "-",
            f"{parity.max_rel_diff:.0e}"
            + (f" ({parity.label_mismatches} labels)" if parity.label_mismatches else ""),
            f"{float32}{note} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated; --list names them")
    parser.add_argument("--list", action="store_true", help="print the families and exit")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns of measurement (in process: best median kept)"
    )
    parser.add_argument("--repeat", type=int, default=2000, help="onnxruntime runs per single-row median")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per model, alternating")
    parser.add_argument("--no-http", dest="http", action="store_false", help="in process only")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{k}: {f.task}" for k, f in FAMILIES.items()))
        return
    unknown = [f for f in args.families.split(",") if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; --list names them")
    cpus = sorted(os.sched_getaffinity(0))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores (this process on {cpus}), "
        f"onnxruntime {ort.__version__}, 1 thread; {args.rows} rows ({int(args.rows * 0.8)} fitted), "
        f"{args.classes} classes; best of {args.rounds} medians of {args.repeat} runs; HTTP: "
        f"{args.requests} requests per model, alternating; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| family | 1 row exact us | 1 row skl2onnx us | ratio | nodes exact / skl2onnx | "
        "HTTP p50 exact / float ms | HTTP ratio | HTTP p99 exact ms | exact max rel err (labels) | "
        "float32 max rel err |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    started = time.monotonic()
    for name in args.families.split(","):
        # one family's failure (a fit, a converter) must not lose the other rows
        try:
            row = measure(name, FAMILIES[name], args)
        except Exception as exc:  # noqa: BLE001
            row = f"| {name} | failed: {type(exc).__name__}: {str(exc)[:160]} |"
        print(row, flush=True)
    print(f"# {time.monotonic() - started:.0f} s; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
