"""What exactness costs: skl2onnx's float32 export vs tabserve's exact export, one row per model family.

    taskset -c 0 .venv/bin/python benchmarks/export_cost.py [--families RF,GB] [--tasks binary,multiclass]
        [--rounds 5] [--repeat 2000] [--rows 20000]

Models: StandardScaler (none with ``--bare``) + one estimator, fitted on 80% of ``make_regression`` / ``make_classification``
(``--rows`` rows, 8 features; 2 or 3 classes): RF and ET (100 trees, depth 12, or fully grown with ``--forest-depth 0``), GB (100 trees, depth 3),
HistGB (100 iterations, 31 leaves), LightGBM (100 trees, 31 leaves), XGBoost (100 trees, depth 6).
For each model and each export: the ONNX size and onnxruntime's latency for 1 row and for 1000 rows,
every output fetched (as the server does), one thread (intra_op_num_threads=1, ORT_ENABLE_ALL). Each
latency is the median of ``--repeat`` runs (a twentieth of that for 1000 rows); the two exports are
measured in turns, ``--rounds`` times, and the best median of each is kept, so that a burst of load on a
shared machine does not land on one side only. The ratios are tabserve / skl2onnx. The last columns are
the exact export's max relative error against the model (values or probabilities; and label mismatches)
on the held-out rows and on its adversarial rows (values at and next to every split threshold).
The features do not accept NaN (the manifest's ``allow_missing``, as ``tabserve train`` writes it for
data without missing values), so the graph need not route NaN; ``--missing`` makes every feature accept
it (except for GB, which refuses NaN), which costs the trees a negated copy of the input (NaN-left splits read it) and adds NaN rows to the
adversarial ones.

skl2onnx's side: the float32 graph tabserve's fallback makes (``export_skl2onnx``). LightGBM and XGBoost
need onnxmltools' converters (``pip install onnxmltools``; without it those rows are skipped).
skl2onnx 1.20 cannot convert a HistGradientBoosting model (it hands onnx a Python bool where an int is
required); this script coerces that one attribute value to int so that skl2onnx's own converter runs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.core.manifest import Feature
from tabserve.training.adversarial import adversarial_rows
from tabserve.training.export import ExportedModel, export_onnx, export_skl2onnx

N_FEATURES = 8
TASKS = ("regression", "binary", "multiclass")
TAKES_NAN = ("RF", "ET", "HistGB", "LightGBM", "XGBoost")  # GradientBoosting refuses NaN


def estimator(family: str, task: str, forest_depth: int | None = 12) -> Any:
    from sklearn import ensemble

    regression = task == "regression"
    if family in ("RF", "ET"):
        name = {"RF": "RandomForest", "ET": "ExtraTrees"}[family] + ("Regressor" if regression else "Classifier")
        return getattr(ensemble, name)(n_estimators=100, max_depth=forest_depth, random_state=0, n_jobs=1)
    if family == "GB":
        cls = ensemble.GradientBoostingRegressor if regression else ensemble.GradientBoostingClassifier
        return cls(n_estimators=100, max_depth=3, random_state=0)
    if family == "HistGB":
        cls = ensemble.HistGradientBoostingRegressor if regression else ensemble.HistGradientBoostingClassifier
        return cls(max_iter=100, max_leaf_nodes=31, early_stopping=False, random_state=0)
    if family == "LightGBM":
        import lightgbm

        cls = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
        return cls(n_estimators=100, num_leaves=31, random_state=0, verbose=-1, n_jobs=1)
    if family == "XGBoost":
        import xgboost

        cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
        return cls(n_estimators=100, max_depth=6, random_state=0, n_jobs=1)
    raise SystemExit(f"unknown family {family!r}")


def data(task: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    if task == "regression":
        return make_regression(n_samples=rows, n_features=N_FEATURES, random_state=0)
    classes = 2 if task == "binary" else 3
    return make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=6, n_classes=classes,
                               random_state=0)


def register_booster_converters() -> bool:
    """onnxmltools' LightGBM and XGBoost converters, registered with skl2onnx (for pipelines)."""
    try:
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    except ImportError:
        return False
    import lightgbm
    import xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for cls, alias, conv in ((lightgbm.LGBMClassifier, "LgbmClassifier", convert_lightgbm),
                             (xgboost.XGBClassifier, "XGBClassifier", convert_xgboost)):
        update_registered_converter(cls, alias, calculate_linear_classifier_output_shapes, conv, options=options)
    for cls, alias, conv in ((lightgbm.LGBMRegressor, "LgbmRegressor", convert_lightgbm),
                             (xgboost.XGBRegressor, "XGBRegressor", convert_xgboost)):
        update_registered_converter(cls, alias, calculate_linear_regressor_output_shapes, conv)
    return True


def patch_skl2onnx_hist_gradient_boosting() -> None:
    """skl2onnx 1.20 passes ``missing = False`` (a bool) for HistGB leaves into an int attribute."""
    from skl2onnx.common import tree_ensemble

    add_node = tree_ensemble.add_node
    if getattr(add_node, "coerced", False):
        return

    def coerced(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return add_node(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    coerced.coerced = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = coerced


def session(exported: ExportedModel) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(exported.onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])


def median_s(run: Callable[[], Any], repeat: int) -> float:
    for _ in range(min(50, repeat)):  # warm up
        run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)))


def exactness(model: Any, sess: ort.InferenceSession, rows: np.ndarray, task: str) -> tuple[float, int]:
    """(max relative error of the values or probabilities, label mismatches) of the exact export."""
    outputs = sess.run(None, {"X": rows})
    if task == "regression":
        return max_rel(outputs[0].ravel(), model.predict(rows)), 0
    labels, proba = outputs
    return max_rel(proba, model.predict_proba(rows)), int(np.sum(labels != model.predict(rows)))


def measure(family: str, task: str, args: argparse.Namespace) -> dict[str, Any]:
    X, y = data(task, args.rows)
    split = int(args.rows * 0.8)
    steps = [] if args.bare else [("scaler", StandardScaler())]
    model = Pipeline([*steps, ("model", estimator(family, task, args.forest_depth or None))]).fit(X[:split], y[:split])
    holdout = X[split:]
    kind = "regression" if task == "regression" else "classification"
    missing = args.missing and family in TAKES_NAN
    features = [Feature(name=f"x{i}", dtype="float64", allow_missing=missing) for i in range(N_FEATURES)]
    frame = pd.DataFrame(holdout, columns=[f.name for f in features])
    adversarial = adversarial_rows(model, features, frame, list(range(len(frame)))).rows.to_numpy(np.float64)
    exports = {"skl2onnx": export_skl2onnx(model, N_FEATURES, kind), "tabserve": export_onnx(model, features, kind)}
    sessions = {k: session(e) for k, e in exports.items()}
    feeds = {k: np.dtype(e.input["dtype"]) for k, e in exports.items()}  # type: ignore[index]
    one = {k: {"X": holdout[:1].astype(d)} for k, d in feeds.items()}
    batch = {k: {"X": holdout[:1000].astype(d)} for k, d in feeds.items()}
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for k, sess in sessions.items():
            for rows, feed, repeat in (("1", one[k], args.repeat), ("1000", batch[k], max(10, args.repeat // 20))):
                t = median_s(lambda: sess.run(None, feed), repeat)  # noqa: B023
                best[k, rows] = min(best.get((k, rows), np.inf), t)
    errors = [exactness(model, sessions["tabserve"], rows, task) for rows in (holdout, adversarial)]
    return {"family": family, "task": task, "best": best, "errors": errors,
            "size": {k: len(e.onnx_bytes) for k, e in exports.items()}}


def report(r: dict[str, Any]) -> str:
    b, s = r["best"], r["size"]
    (hold, hold_lab), (adv, adv_lab) = r["errors"]
    return (f"| {r['family']} | {r['task']} | {s['skl2onnx'] / 1e6:.2f} / {s['tabserve'] / 1e6:.2f} MB | "
            f"{b['skl2onnx', '1'] * 1e6:.1f} / {b['tabserve', '1'] * 1e6:.1f} us | "
            f"**{b['tabserve', '1'] / b['skl2onnx', '1']:.2f}x** | "
            f"{b['skl2onnx', '1000'] * 1e3:.2f} / {b['tabserve', '1000'] * 1e3:.2f} ms | "
            f"{b['tabserve', '1000'] / b['skl2onnx', '1000']:.2f}x | "
            f"{hold:.1g} / {adv:.1g} | {hold_lab + adv_lab} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="RF,ET,GB,HistGB,LightGBM,XGBoost")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="turns of measurement; the best median is kept")
    parser.add_argument("--repeat", type=int, default=2000, help="runs per single-row median (1000 rows: /20)")
    parser.add_argument("--forest-depth", type=int, default=12,
                        help="max_depth of RF and ET; 0 grows them fully (pure leaves, as tabserve train does)")
    parser.add_argument("--bare", action="store_true", help="the estimator alone, without StandardScaler")
    parser.add_argument("--missing", action="store_true",
                        help="every feature accepts NaN (allow_missing), so the trees route NaN as the model does")
    args = parser.parse_args()

    patch_skl2onnx_hist_gradient_boosting()
    boosters = register_booster_converters()
    print(f"# {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, 1 thread, "
          f"best of {args.rounds} medians ({args.repeat} runs for 1 row, {max(10, args.repeat // 20)} for 1000)"
          f"{'; every feature allows NaN' if args.missing else ''}{'; no scaler' if args.bare else ''}"
          f"{'; fully grown forests' if not args.forest_depth else ''}")
    print("| family | task | size skl2onnx / tabserve | 1 row skl2onnx / tabserve | 1 row ratio | "
          "1000 rows skl2onnx / tabserve | 1000 rows ratio | max rel err holdout / adversarial | "
          "label mismatches |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in args.families.split(","):
        if family in ("LightGBM", "XGBoost") and not boosters:
            print(f"| {family} | skipped: skl2onnx needs onnxmltools' converters (pip install onnxmltools) |")
            continue
        for task in args.tasks.split(","):
            if task not in TASKS:
                raise SystemExit(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
            print(report(measure(family, task, args)), flush=True)


if __name__ == "__main__":
    main()
