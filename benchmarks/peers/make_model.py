"""Train the benchmark model and write what every row and the driver read.

usage: python benchmarks/peers/make_model.py [--out DIR] [--trees N --samples N]   (the repo's .venv)

The model is the one the broader peers comparison uses, so its rows can be read beside these:
Pipeline(StandardScaler, RandomForestRegressor(100 trees, max_depth 12)) on make_regression(20000 rows,
8 features). Written to --out (default $PEERS/model, PEERS=/tmp/peers):
  model.joblib               the scikit-learn pipeline (tabserve imports it with its own exporter)
  model.onnx                 skl2onnx's float32 graph, input "X" [None, 8] (fastapi-onnx, inproc.py)
  rows1.csv, rows1000.csv    request rows: new points of the same distribution, float32 values, 8 per line
  expected1.json, expected1000.json   scikit-learn's predictions for those rows (the correctness check)
  info.json                  versions and how far the float graph is from scikit-learn
--trees/--samples make a smaller model of the same shape (the harness's own test uses it to stay fast).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

N_FEATURES = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("PEERS", "/tmp/peers")) / "model")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    X, y = make_regression(n_samples=args.samples, n_features=N_FEATURES, noise=10, random_state=0)
    pipe = Pipeline([("scaler", StandardScaler()),
                     ("rf", RandomForestRegressor(n_estimators=args.trees, max_depth=12, random_state=0, n_jobs=1))])
    pipe.fit(X, y)
    joblib.dump(pipe, args.out / "model.joblib")
    graph = convert_sklearn(pipe, initial_types=[("X", FloatTensorType([None, N_FEATURES]))],
                            target_opset={"": 17, "ai.onnx.ml": 3})
    (args.out / "model.onnx").write_bytes(graph.SerializeToString())

    # Fresh rows of the same distribution (a different seed), rounded to float32 so that every client sends
    # exactly the values scikit-learn was asked about, whichever dtype the server decodes them to.
    rows, _ = make_regression(n_samples=1000, n_features=N_FEATURES, noise=10, random_state=1)
    rows = rows.astype(np.float32)
    expected = pipe.predict(rows)
    session = ort.InferenceSession(str(args.out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_pred = session.run(None, {"X": rows})[0].ravel()
    for n in (1, 1000):
        lines = (",".join(repr(float(v)) for v in row) for row in rows[:n])
        (args.out / f"rows{n}.csv").write_text("\n".join(lines) + "\n")
        (args.out / f"expected{n}.json").write_text(json.dumps([float(v) for v in expected[:n]]))
    info = {"sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "onnxruntime": ort.__version__,
            "trees": args.trees, "samples": args.samples, "train_r2": round(float(pipe.score(X, y)), 4),
            "float_graph_max_abs_diff": float(np.abs(onnx_pred - expected).max())}
    (args.out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
