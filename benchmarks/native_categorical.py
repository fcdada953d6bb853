"""What native categorical splits cost a row: the same library, data and size of model, its categorical
columns either split natively (pandas ``category`` columns; BRANCH_MEMBER nodes after a text lookup) or
one-hot encoded in the pipeline (OneHotEncoder + passthrough; ``<=`` splits on 0/1 columns).

    taskset -c 0 .venv/bin/python benchmarks/native_categorical.py [--libraries HistGB,LightGBM,XGBoost]
        [--tasks regression,binary] [--rows 20000] [--repeat 3000] [--rounds 5]

Data: ``--rows`` rows of 6 numbers and 3 text columns of 4, 12 and 30 named categories (5% missing in the
native case; the one-hot pipeline gets the same rows with missing as a category of its own), the target
a function of both. Models: 100 trees (HistGB 100 iterations, 31 leaves; LightGBM 31 leaves; XGBoost depth
6). Both bundles take the same request (numbers in ``X``, text in ``X_cat``); the latency is onnxruntime's
for 1 row (and for 1000 rows), every output fetched, one thread, median of ``--repeat`` runs; the two are
measured in turns ``--rounds`` times and the best median of each is kept. Ratio: native / one-hot.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tabserve.training.convert import FeatureSpec, export_exact

NUMERIC = [f"x{i}" for i in range(6)]
CARDINALITY = {"colour": 4, "region": 12, "product": 30}


def frame(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(rng.normal(size=(rows, len(NUMERIC))), columns=NUMERIC)
    y = out["x0"] - 0.5 * out["x1"] ** 2
    for name, k in CARDINALITY.items():
        names = [f"{name} {i}" for i in range(k)]
        codes = rng.integers(0, k, rows)
        y = y + rng.normal(size=k)[codes]
        values = np.array(names, dtype=object)[codes]
        values[rng.random(rows) < 0.05] = None
        out[name] = pd.Categorical(values, categories=names)
    return out, y.to_numpy()


def estimator(library: str, task: str, native: bool) -> Any:
    regression = task == "regression"
    if library == "HistGB":
        from sklearn import ensemble

        cls = ensemble.HistGradientBoostingRegressor if regression else ensemble.HistGradientBoostingClassifier
        return cls(max_iter=100, max_leaf_nodes=31, early_stopping=False, random_state=0,
                   categorical_features="from_dtype" if native else None)
    if library == "LightGBM":
        import lightgbm

        cls = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
        return cls(n_estimators=100, num_leaves=31, random_state=0, verbose=-1, n_jobs=1)
    import xgboost

    cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
    return cls(n_estimators=100, max_depth=6, random_state=0, n_jobs=1, enable_categorical=native,
               max_cat_to_onehot=1)


def one_hot(model: Any) -> Pipeline:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    columns = ColumnTransformer([("onehot", encoder, list(CARDINALITY)), ("numbers", "passthrough", NUMERIC)])
    return Pipeline([("columns", columns), ("model", model)])


def session(onnx_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def median_us(s: ort.InferenceSession, feed: dict[str, np.ndarray], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        s.run(None, feed)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def feeds(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    text = rows[list(CARDINALITY)].astype(object).where(rows[list(CARDINALITY)].notna(), "")
    return {"X": rows[NUMERIC].to_numpy(dtype=np.float64), "X_cat": text.to_numpy(dtype=object)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libraries", default="HistGB,LightGBM,XGBoost")
    parser.add_argument("--tasks", default="regression,binary")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data, y = frame(args.rows)
    one_hot_data = data.copy()
    for name in CARDINALITY:  # the encoder sees missing as one more category
        one_hot_data[name] = data[name].astype(object).where(data[name].notna(), "").astype(str)
    features = [FeatureSpec(n) for n in NUMERIC] + [FeatureSpec(n, "categorical") for n in CARDINALITY]
    features = sorted(features, key=lambda f: list(data.columns).index(f.name))
    print(f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, one thread; "
          f"{args.rows} rows, categorical cardinalities {list(CARDINALITY.values())}")
    print(f"{'library':9} {'task':10} {'native 1 row':>13} {'one-hot 1 row':>14} {'ratio':>6} "
          f"{'native 1000':>12} {'one-hot 1000':>13} {'ratio':>6}")
    for library in args.libraries.split(","):
        for task in args.tasks.split(","):
            target = y if task == "regression" else (y > np.median(y)).astype(int)
            kind = "regression" if task == "regression" else "classification"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                native = estimator(library, task, True).fit(data, target)
                encoded = one_hot(estimator(library, task, False)).fit(one_hot_data, target)
            sessions = {"native": session(export_exact(native, features, kind).onnx_bytes),  # type: ignore[arg-type]
                        "one-hot": session(export_exact(encoded, features, kind).onnx_bytes)}  # type: ignore[arg-type]
            one, batch = feeds(data.iloc[7:8]), feeds(data.iloc[:1000])
            best: dict[str, list[float]] = {k: [np.inf, np.inf] for k in sessions}
            for _ in range(args.rounds):
                for k, s in sessions.items():
                    best[k][0] = min(best[k][0], median_us(s, one, args.repeat))
                    best[k][1] = min(best[k][1], median_us(s, batch, max(args.repeat // 20, 10)))
            n, o = best["native"], best["one-hot"]
            print(f"{library:9} {task:10} {n[0]:11.1f}us {o[0]:12.1f}us {n[0] / o[0]:6.2f} "
                  f"{n[1]:10.0f}us {o[1]:11.0f}us {n[1] / o[1]:6.2f}")


if __name__ == "__main__":
    main()
