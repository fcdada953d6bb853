"""What exactness costs: skl2onnx's float32 export vs tabserve's exact export of the same random forest.

    .venv/bin/python benchmarks/export_cost.py [--rows 20000] [--trees 100] [--depth 12] [--repeat 2000]

Model: StandardScaler + RandomForestRegressor(n_estimators=100, max_depth=12, random_state=0, n_jobs=1)
on make_regression(20000, 8, random_state=0), fitted on 16000 rows. For each export: the ONNX size,
onnxruntime's latency for 1 row and for 1000 rows (median of many runs, one thread: intra_op_num_threads=1,
ORT_ENABLE_ALL) and the max relative error against scikit-learn on the 4000 held-out rows and on the
exact export's adversarial rows (values at and next to every split threshold), as a client sends them
(float64; the float32 graph gets them rounded to float32, which is all it can take).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.manifest import Feature
from tabserve.training.adversarial import adversarial_rows
from tabserve.training.export import ExportedModel, export_onnx, export_skl2onnx


def session(exported: ExportedModel) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(exported.onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def median_ms(run: Any, repeat: int) -> float:
    for _ in range(min(50, repeat)):  # warm up
        run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=2000, help="runs per single-row median (1000 rows: /10)")
    args = parser.parse_args()

    X, y = make_regression(n_samples=args.rows, n_features=8, random_state=0)
    split = int(args.rows * 0.8)
    model = Pipeline([("scaler", StandardScaler()), ("model", RandomForestRegressor(
        n_estimators=args.trees, max_depth=args.depth, random_state=0, n_jobs=1))])
    t0 = time.perf_counter()
    model.fit(X[:split], y[:split])
    fit_s = time.perf_counter() - t0
    holdout = X[split:]
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(8)]
    frame = pd.DataFrame(holdout, columns=[f.name for f in features])
    adversarial = adversarial_rows(model, features, frame, list(range(len(frame)))).rows.to_numpy()

    print(f"# {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, 1 thread; "
          f"RandomForestRegressor({args.trees} trees, depth {args.depth}) fitted in {fit_s:.1f} s")
    print(f"{'export':<22}{'size':>10}{'export s':>10}{'1 row ms':>10}{'1000 rows ms':>14}"
          f"{'max rel err (holdout)':>24}{'max rel err (adversarial)':>28}")
    for label, export in (("skl2onnx float32", lambda: export_skl2onnx(model, 8, "regression")),
                          ("tabserve exact", lambda: export_onnx(model, features, "regression"))):
        t0 = time.perf_counter()
        exported = export()
        export_s = time.perf_counter() - t0
        sess = session(exported)
        dtype = np.dtype(exported.input["dtype"])
        name, out = exported.input["name"], [exported.outputs[0]["name"]]
        one, batch = holdout[:1].astype(dtype), holdout[:1000].astype(dtype)
        errors = [max_rel(sess.run(out, {name: rows.astype(dtype)})[0].ravel(), model.predict(rows))
                  for rows in (holdout, adversarial)]
        one_ms = median_ms(lambda: sess.run(out, {name: one}), args.repeat)  # noqa: B023
        batch_ms = median_ms(lambda: sess.run(out, {name: batch}), max(20, args.repeat // 10))  # noqa: B023
        print(f"{label:<22}{len(exported.onnx_bytes) / 1e6:>8.2f}MB{export_s:>10.2f}{one_ms:>10.4f}{batch_ms:>14.3f}"
              f"{errors[0]:>24.3g}{errors[1]:>28.3g}")


if __name__ == "__main__":
    main()
