"""What an explanation costs: tabserve's TreeSHAP from the bundle vs shap.TreeExplainer on the fitted model, and
what explanation load does to prediction latency over HTTP.

    .venv/bin/python benchmarks/explain_cost.py [--rows 20000] [--repeat 30] [--seconds 5] [--skip-http]

Model: the export benchmark's (benchmarks/export_cost.py): StandardScaler + RandomForestRegressor(100 trees,
max_depth=12) on make_regression(rows, 8 features, random_state=0), trained by `tabserve train` (80/20
split, seed 0), so the bundle carries its explain.npz.

1. One row and 100 rows, exact path-dependent SHAP: tabserve's ``Explainer.explain`` (the whole path:
   preprocessing graph, compiled kernel, per-feature sums; and the numpy fallback) against
   ``shap.TreeExplainer(forest).shap_values`` on the same rows (already scaled for shap); best and median
   of ``--repeat`` runs, and the largest difference between the two.
2. A `tabserve serve` on 127.0.0.1: single-row predictions from 2 keep-alive connections for ``--seconds``,
   p50/p99, alone and then while 2 other connections send single-row explanations non-stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_regression

from tabserve.cli.loadgen import LoadResult, run_load
from tabserve.core.bundle import read_bundle
from tabserve.core.explain.explainer import Explainer
from tabserve.core.explain.treeshap import explain_numpy
from tabserve.training import train_file


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000, statistics.median(times) * 1000


def once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def percentile_ms(result: LoadResult, q: float) -> float:
    return float(np.percentile(result.latencies_s, q)) * 1000 if result.latencies_s else float("nan")


@contextlib.contextmanager
def server(bundle: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the server stops
    proc = subprocess.Popen([sys.executable, "-m", "tabserve", "serve", str(bundle), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TABSERVE_ACCESS_LOG": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"server did not start:\n{log.read().decode()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per single-row measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each HTTP phase")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    import shap

    work = Path(tempfile.mkdtemp(prefix="tabserve-explain-bench-"))
    X, y = make_regression(n_samples=args.rows, n_features=8, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)]).assign(y=y)
    frame.to_csv(work / "data.csv", index=False)
    t0 = time.perf_counter()
    trained = train_file(work / "data.csv", "y", dest=work / "bundle", seed=0,
                         params={"n_estimators": 100, "max_depth": 12, "n_jobs": 1})
    train_s = time.perf_counter() - t0
    bundle = read_bundle(trained.path)
    explainer = Explainer.from_bundle(bundle)
    explainer.warm_up()
    forest = trained.pipeline[-1]
    reference = shap.TreeExplainer(forest)
    rows = X[-100:]
    scaled = trained.pipeline[:-1].transform(rows)
    assert explainer.plan is not None
    nodes = len(explainer.plan.lay.parent)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
          f", shap {shap.__version__}, numba kernel: {explainer.compiled}; RandomForestRegressor(100 trees, "
          f"depth 12, {nodes} nodes) trained in {train_s:.1f} s; explain.npz {bundle.manifest.explain.size_bytes / 1e6:.1f} MB")  # type: ignore[union-attr]

    ours = explainer.explain(rows).contributions[:, 0, :]
    theirs = reference.shap_values(scaled)
    print(f"max |tabserve - shap| over 100 rows: {np.max(np.abs(ours - theirs)):.2e}")
    cases: list[tuple[str, Callable[[int], object]]] = [
        ("shap.TreeExplainer", lambda n: reference.shap_values(scaled[:n])),
        ("tabserve exact", lambda n: explainer.explain(rows[:n])),
        ("tabserve approximate", lambda n: explainer.explain(rows[:n], "approximate")),
        ("tabserve exact, numpy", lambda n: explain_numpy(explainer.plan, scaled[:n])),  # type: ignore[arg-type]
    ]
    # Interleaved (one run of each per round) so that other load on the machine hits every case alike.
    single: dict[str, list[float]] = {label: [] for label, _ in cases}
    for fn in (fn for _, fn in cases):
        fn(1)  # warm
    for round_ in range(args.repeat):
        for label, fn in cases:
            if "numpy" in label and round_ % 10:
                continue  # the fallback is slow: one run in ten rounds
            t0 = time.perf_counter()
            fn(1)
            single[label].append(time.perf_counter() - t0)
    print(f"{'':<24}{'1 row best ms':>15}{'1 row median':>14}{'100 rows ms':>13}{'shap / this (best)':>20}")
    shap_best = min(single["shap.TreeExplainer"])
    for label, fn in cases:
        times = single[label]
        slow = "numpy" in label or "shap" in label  # seconds per run: once, not warmed (it was, above)
        batch = once(lambda: fn(100)) if slow else timed(lambda: fn(100), 3)[0]  # noqa: B023
        print(f"{label:<24}{min(times) * 1000:>15.2f}{statistics.median(times) * 1000:>14.2f}{batch:>13.1f}"
              f"{shap_best / min(times):>19.1f}x")

    if args.skip_http:
        return
    predict = json.dumps({"data": rows[0].tolist()}).encode()
    explain = json.dumps({"data": rows[0].tolist()}).encode()
    with server(trained.path) as url:
        run_load(url, "/api/v1/explain", explain, concurrency=1, duration_s=1)  # compile and load explain data
        run_load(url, "/api/v1/predict", predict, concurrency=2, duration_s=1)
        alone = run_load(url, "/api/v1/predict", predict, concurrency=2, duration_s=args.seconds)
        background: dict[str, LoadResult] = {}
        loader = threading.Thread(target=lambda: background.setdefault("r", run_load(
            url, "/api/v1/explain", explain, concurrency=2, duration_s=args.seconds + 1)))
        loader.start()
        time.sleep(0.5)
        loaded = run_load(url, "/api/v1/predict", predict, concurrency=2, duration_s=args.seconds)
        loader.join()
    ex = background["r"]
    print(f"\nHTTP, single-row predictions from 2 connections, {args.seconds:g} s each:")
    print(f"{'':<34}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for label, r in (("predictions alone", alone), ("predictions + explain load", loaded),
                     ("  (the explanations themselves)", ex)):
        bad = r.errors + sum(n for s, n in r.statuses.items() if s != 200)
        print(f"{label:<34}{r.requests / r.elapsed_s:>12.0f}{percentile_ms(r, 50):>9.2f}{percentile_ms(r, 99):>9.2f}"
              f"{bad:>8}")


if __name__ == "__main__":
    main()
