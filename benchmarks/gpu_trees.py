"""Tree models on a GPU: model.onnx (TreeEnsemble, CPU cores) against model.tensor.onnx on CUDA, exactly.

On a machine with an NVIDIA GPU and onnxruntime-gpu (numpy and onnxruntime only are imported here):

    python benchmarks/tensor_trees.py --save /tmp/trees --rows 1000    # anywhere with the [train] extra
    python benchmarks/gpu_trees.py /tmp/trees                          # on the GPU machine: ~3-5 minutes

or, where the GPU machine has the [train] extra, lightgbm and xgboost too, ``python benchmarks/gpu_trees.py``
alone builds the same three models (the demo forest, a 500-tree LightGBM, an XGBoost classifier) first.

For each model it prints:
- placement: does CUDA run the whole tensor graph (a session on the CUDA provider alone, CPU fallback off);
- exactness on the GPU: the tensor graph on CUDA against model.onnx on one CPU thread, on the split-value probe
  rows (each split value and the doubles beside it) plus 20,000 random rows with 2% NaN: identical outputs,
  max relative difference (bound 1e-9) and differing labels (bound 0); EXACT or FAILED;
- rows/s at 1k, 10k, 100k and 1M rows: model.onnx on all CPU cores, and the tensor graph on CUDA (host arrays
  in and out, in the slices serving uses), and the speed-up (the issue's goal: 20x at 100k rows);
- for a model compiled as perfect trees, the other (tree) layout's rows/s at 100k rows, to check the choice;
- the crossover: the smallest batch from 256 to 8192 rows where CUDA is faster, to set TABSERVE_TENSOR_MIN_ROWS.
Exit status 1 if any model is not exact on the GPU or CUDA is not used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
ELEMENTS_PER_SLICE = 1 << 25  # as core/tensor_route.py: rows x trees of one slice
DEADLINE_S = 420.0  # stop measuring (and say so) past 7 minutes


def chunk_rows(trees: int) -> int:
    return max(1024, ELEMENTS_PER_SLICE // max(trees, 1))


def session(path: Path, providers: list[str], threads: int = 0, strict: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 4 if strict else 3  # a refusal is reported below, not logged in red
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(str(path), so, providers=providers)


def run_sliced(s: ort.InferenceSession, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    parts = [s.run(None, {"X": x[i:i + chunk]}) for i in range(0, len(x), chunk)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def per_call(call: Callable[[], Any], seconds: float) -> float:
    call()
    runs, t0 = 0, time.perf_counter()
    while True:
        call()
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / runs


def cpu_nodes(path: Path, x: np.ndarray) -> str:
    """The operators a CUDA-then-CPU session ran on the CPU, with counts (from onnxruntime's profiler)."""
    so = ort.SessionOptions()
    so.enable_profiling, so.log_severity_level = True, 3
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "gpu_trees")
    s = ort.InferenceSession(str(path), so, providers=[CUDA, CPU])
    s.run(None, {"X": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    ops: dict[str, int] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and args.get("provider") == CPU:
            ops[args.get("op_name", "?")] = ops.get(args.get("op_name", "?"), 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())) or "none"


def random_rows(meta: dict[str, Any], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = np.array(meta["low"]), np.array(meta["high"])
    x = low + (high - low) * rng.random((n, len(low)))
    x[rng.random(x.shape) < 0.02] = np.nan
    return x


def exactness(expected: list[np.ndarray], actual: list[np.ndarray]) -> tuple[bool, float, int, float]:
    """(every output identical, max relative difference, differing labels, share of identical values)"""
    worst, labels, same, total = 0.0, 0, 0, 0
    for a, b in zip(expected, actual, strict=True):
        if a.dtype.kind == "f":
            diff = np.abs(a - b)
            both_nan = np.isnan(a) & np.isnan(b)
            rel = np.where(both_nan, 0.0, diff / np.maximum(np.abs(a), np.finfo(np.float64).tiny))
            worst = max(worst, float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0)))
        else:
            labels += int((a != b).sum())
        same += int((np.equal(a, b) | (a.dtype.kind == "f" and np.isnan(a) & np.isnan(b))).sum())
        total += a.size
    return same == total, worst, labels, same / max(total, 1)


def check_case(folder: Path, slug: str, sizes: list[int], seconds: float, started: float) -> bool:
    meta = json.loads((folder / f"{slug}.json").read_text())
    cpu_path, tensor_path = folder / f"{slug}.cpu.onnx", folder / f"{slug}.tensor.onnx"
    chunk = chunk_rows(meta["trees"])
    print(f"\n== {meta['name']}: {meta['trees']} trees, {meta['strategy']} strategy, depth {meta['depth']}")
    try:
        session(tensor_path, [CUDA], strict=True)
        print("placement: CUDA runs the whole tensor graph")
    except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal does not name the nodes: the profile does
        print(f"placement: NOT whole on CUDA: {str(exc).strip().splitlines()[0][:200]}; on the CPU: "
              f"{cpu_nodes(tensor_path, random_rows(meta, 64, seed=0))}")
    gpu = session(tensor_path, [CUDA, CPU])
    on_cuda = gpu.get_providers()[0] == CUDA
    cpu_all, cpu_one = session(cpu_path, [CPU]), session(cpu_path, [CPU], threads=1)
    probes = np.load(folder / f"{slug}.probe.npy")
    rows = np.concatenate([probes, random_rows(meta, 20_000, seed=3)])
    same, worst, labels, share = exactness(cpu_one.run(None, {"X": rows}), run_sliced(gpu, rows, chunk))
    exact = worst <= 1e-9 and labels == 0
    print(f"exactness on {gpu.get_providers()[0]} ({len(rows)} rows, {len(probes)} on split values): "
          f"{'EXACT' if exact else 'FAILED'}; bit-identical {share:.6%}{' (all)' if same else ''}, "
          f"max rel diff {worst:.3g}, differing labels {labels}")
    device = "CUDA" if on_cuda else "CPU!"
    print(f"{'rows':>9} {'model.onnx CPU rows/s':>22} {f'tensor {device} rows/s':>20} {'speed-up':>9}")
    for n in sizes:
        if time.perf_counter() - started > DEADLINE_S:
            print(f"{n:>9} (skipped: past the {DEADLINE_S:.0f} s budget)")
            continue
        x = random_rows(meta, n, seed=n)
        a = per_call(lambda x=x: cpu_all.run(None, {"X": x}), seconds if n < 1_000_000 else 0.0)
        b = per_call(lambda x=x: run_sliced(gpu, x, chunk), seconds if n < 1_000_000 else 0.0)
        print(f"{n:>9} {n / a:>22,.0f} {n / b:>20,.0f} {a / b:>8.1f}x")
    other = folder / f"{slug}.tree.onnx"  # a perfect-strategy model's tree layout, for comparison
    if other.exists() and time.perf_counter() - started < DEADLINE_S:
        alt = session(other, [CUDA, CPU])
        x = random_rows(meta, 100_000, seed=7)
        a, b = (per_call(lambda x=x, s=s: run_sliced(s, x, chunk), seconds) for s in (gpu, alt))
        print(f"layouts at 100,000 rows: perfect {100_000 / a:,.0f} rows/s, tree {100_000 / b:,.0f} rows/s")
    crossover = None
    for n in (256, 512, 1024, 2048, 4096, 8192):
        if time.perf_counter() - started > DEADLINE_S:
            break
        x = random_rows(meta, n, seed=n)
        if per_call(lambda x=x: run_sliced(gpu, x, chunk), 0.2) < per_call(lambda x=x: cpu_all.run(None, {"X": x}), 0.2):
            crossover = n
            break
    print(f"crossover: the tensor graph faster from {crossover} rows" if crossover
          else "crossover: none up to 8192 rows")
    return exact and on_cuda


def build_here(folder: Path) -> None:
    script = Path(__file__).with_name("tensor_trees.py")
    subprocess.run([sys.executable, str(script), "--save", str(folder), "--rows", "1000", "--seconds", "0.2"],
                   check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="?", help="folder written by tensor_trees.py --save (default: build them here)")
    p.add_argument("--rows", default="1000,10000,100000,1000000")
    p.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement below 1M rows")
    args = p.parse_args(argv)
    started = time.perf_counter()
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}, {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cases) if args.cases else Path(tmp)
        if not args.cases:
            build_here(folder)
        slugs = sorted(f.name[: -len(".json")] for f in folder.glob("*.json"))
        results = [check_case(folder, s, [int(r) for r in args.rows.split(",")], args.seconds, started)
                   for s in slugs]
    print(f"\n{sum(results)}/{len(results)} models exact on CUDA; {time.perf_counter() - started:.0f} s")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
