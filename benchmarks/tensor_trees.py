"""The tensor-tree graph (model.tensor.onnx) against the CPU TreeEnsemble (model.onnx), on the CPU.

    python benchmarks/tensor_trees.py                    # demo forest, 500-tree LightGBM, XGBoost; 1k/10k/100k rows
    python benchmarks/tensor_trees.py --rows 1000,10000 --threads 2 --seconds 2

For each model: how it was compiled (strategy, trees, depth), what building the tensor graph and checking it on
2400 parity-sized rows adds to an export, both files' sizes, whether both graphs give identical outputs, and
rows/s of each graph at each batch size with the same onnxruntime threads. The tensor graph runs in the slices
serving uses (``core.tensor_route.chunk_rows``). On a CPU the tensor graph is expected to lose (it walks every
level of every tree for every row, where the TreeEnsemble stops at each leaf): it exists for the GPU, where
``benchmarks/gpu_trees.py`` measures it. Needs the [train] extra, lightgbm and xgboost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tabserve.core.tensor_route import chunk_rows
from tabserve.training.convert.tensor_graph import tensor_model
from tabserve.training.export import export_onnx


@dataclass
class Case:
    name: str
    cpu_graph: bytes
    tensor_graph: bytes
    trees: int
    strategy: str
    depth: int
    build_s: float  # tensor_model() on the exported graph
    width: int
    low: np.ndarray
    high: np.ndarray


def _case(name: str, cpu_graph: bytes, X: np.ndarray) -> Case:
    t0 = time.perf_counter()
    tensor = tensor_model(cpu_graph)
    build = time.perf_counter() - t0
    assert tensor is not None, f"{name}: no tensor graph"
    return Case(name, cpu_graph, tensor.onnx_bytes, tensor.trees, "/".join(sorted(set(tensor.strategies))),
                tensor.depth, build, X.shape[1], np.nanmin(X, axis=0), np.nanmax(X, axis=0))


def demo_forest(folder: Path) -> Case:
    """The demo bundle's 100-tree random forest, as ``tabserve demo`` trains it."""
    from tabserve.core.bundle import read_bundle
    from tabserve.training import train_demo

    bundle = read_bundle(train_demo(dest=folder / "demo"))
    stats = [f.stats for f in bundle.manifest.features]
    X = np.array([[s.min for s in stats], [s.max for s in stats]])  # type: ignore[union-attr]
    return _case("demo forest (sklearn RF, 100 trees)", bundle.onnx_bytes, X)


def _data(n: int = 20_000, f: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] * X[:, 3] + rng.normal(scale=0.3, size=n)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X, y


def lightgbm_500() -> Case:
    import lightgbm as lgb

    X, y = _data()
    model = lgb.LGBMRegressor(n_estimators=500, num_leaves=31, learning_rate=0.05, verbose=-1, random_state=0)
    model.fit(X, y)
    return _case("LightGBM regressor (500 trees, 31 leaves)", export_onnx(model, X.shape[1], "regression").onnx_bytes, X)


def xgboost_binary() -> Case:
    import xgboost as xgb

    X, y = _data(seed=1)
    model = xgb.XGBClassifier(n_estimators=300, max_depth=6, learning_rate=0.1, random_state=0)
    model.fit(X, (y > np.median(y)).astype(int))
    return _case("XGBoost binary (300 trees, depth 6)", export_onnx(model, X.shape[1], "classification").onnx_bytes,
                 X)


def build_cases(folder: Path) -> list[Case]:
    return [demo_forest(folder), lightgbm_500(), xgboost_binary()]


def probe_rows(case: Case, limit: int = 30_000) -> np.ndarray:
    """Rows with one column on each split value of model.onnx's trees and on the doubles beside it."""
    import onnx

    from tabserve.training.convert.tensor_trees import read_ensemble

    base = rows_for(case, 64, seed=5)
    blocks = []
    for node in onnx.load_model_from_string(case.cpu_graph).graph.node:
        if node.op_type != "TreeEnsemble":
            continue
        e = read_ensemble(node)
        for col in np.unique(e.feature):
            t = e.threshold[(e.feature == col) & np.isfinite(e.threshold)]
            column, values = (col, t) if col < case.width else (col - case.width, -t)  # a negated-copy column
            values = np.unique(values)
            probes = np.concatenate([values, np.nextafter(values, np.inf), np.nextafter(values, -np.inf)])
            block = np.resize(base, (len(probes), case.width)).copy()
            block[:, column % case.width] = probes
            blocks.append(block)
    rows = np.concatenate(blocks)
    return rows[np.random.default_rng(0).permutation(len(rows))[:limit]]


def save(case: Case, folder: Path) -> None:
    """What benchmarks/gpu_trees.py reads: both graphs, the input ranges and the probe rows."""
    import json

    slug = "".join(c if c.isalnum() else "-" for c in case.name.split(" (")[0].lower())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{slug}.cpu.onnx").write_bytes(case.cpu_graph)
    (folder / f"{slug}.tensor.onnx").write_bytes(case.tensor_graph)
    if case.strategy == "perfect":  # the other layout too: the GPU run says which is faster there
        other = tensor_model(case.cpu_graph, strategy="tree")
        assert other is not None
        (folder / f"{slug}.tree.onnx").write_bytes(other.onnx_bytes)
    np.save(folder / f"{slug}.probe.npy", probe_rows(case))
    meta = {"name": case.name, "trees": case.trees, "strategy": case.strategy, "depth": case.depth,
            "low": case.low.tolist(), "high": case.high.tolist()}
    (folder / f"{slug}.json").write_text(json.dumps(meta))


def rows_for(case: Case, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows uniform in the training ranges, 2% NaN (every model above routes missing values)."""
    rng = np.random.default_rng(seed)
    x = case.low + (case.high - case.low) * rng.random((n, case.width))
    x[rng.random(x.shape) < 0.02] = np.nan
    return x


def session(data: bytes, threads: int, providers: list[Any] | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=providers or ["CPUExecutionProvider"])


def run_sliced(s: ort.InferenceSession, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    parts = [s.run(None, {"X": x[i:i + chunk]}) for i in range(0, len(x), chunk)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def rows_per_s(call: Callable[[], Any], n: int, seconds: float) -> float:
    call()  # warm up (the first run allocates)
    runs, t0 = 0, time.perf_counter()
    while True:
        call()
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n * runs / elapsed


def identical(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(u, v, equal_nan=True) for u, v in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="1000,10000,100000")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads, both graphs")
    p.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    p.add_argument("--save", type=Path, help="also write the graphs and probe rows there, for gpu_trees.py")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cases = build_cases(Path(tmp))
    for case in cases if args.save else []:
        save(case, args.save)
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s)")
    for case in cases:
        cpu, tensor = session(case.cpu_graph, args.threads), session(case.tensor_graph, args.threads)
        chunk = chunk_rows(case.trees)
        check = rows_for(case, 2400, seed=9)
        t0 = time.perf_counter()
        tensor_out = run_sliced(tensor, check, chunk)
        check_s = time.perf_counter() - t0
        one_thread = session(case.cpu_graph, 1)  # the CPU TreeEnsemble adds in tree order on one thread
        same = identical(one_thread.run(None, {"X": check}), tensor_out)
        print(f"\n{case.name}: strategy {case.strategy}, {case.trees} trees, depth {case.depth}; "
              f"model.onnx {len(case.cpu_graph) / 1e6:.2f} MB, model.tensor.onnx {len(case.tensor_graph) / 1e6:.2f} MB; "
              f"export +{case.build_s:.2f} s build +{check_s:.2f} s check (2400 rows); identical outputs: {same}")
        print(f"{'rows':>8} {'TreeEnsemble rows/s':>20} {'tensor graph rows/s':>20} {'tensor/CPU':>10}")
        for n in sizes:
            x = rows_for(case, n)
            a = rows_per_s(lambda x=x, s=cpu: s.run(None, {"X": x}), n, args.seconds)
            b = rows_per_s(lambda x=x, s=tensor, c=chunk: run_sliced(s, x, c), n, args.seconds)
            print(f"{n:>8} {a:>20,.0f} {b:>20,.0f} {b / a:>10.2f}")


if __name__ == "__main__":
    main()
