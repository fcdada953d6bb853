"""CUDA vs CPU on the same bundles: do the predictions agree, where does each node run, and how fast is it?

    python benchmarks/gpu_check.py                      # the demo forest + a linear model trained on its data
    python benchmarks/gpu_check.py path/to/bundle ...   # your own bundles (numeric features)
    python benchmarks/gpu_check.py --rows 100000 --seconds 3 --json out.json
    python benchmarks/gpu_check.py BUNDLE ... --sizes 1,16,256,4096,65536   # + time per call by batch size

Meant for a machine with a GPU and onnxruntime-gpu: a venv where onnxruntime-gpu replaces onnxruntime, or the
CUDA image with this folder mounted (it has no [train] extra: give it the baked bundle)

    docker run --rm --gpus all -v ./benchmarks:/bench:ro --entrypoint python tabserve:gpu \
        /bench/gpu_check.py /opt/tabserve/models/demo

Elsewhere it measures the CPU and reports the CUDA part as unavailable, with the reason; a CUDA session that
fell back to the CPU (no GPU visible, CUDA libraries missing) is reported as such.

For each bundle and provider list (CPU; CUDA then CPU) it prints: the provider the session really uses, the
share of nodes each provider ran (from onnxruntime's profiler: tree ensembles and the other ai.onnx.ml
operators have CPU kernels only, so they stay on the CPU even in a CUDA session), max abs/rel difference of
the CUDA predictions against the CPU ones on the same rows (checked against --rtol/--atol), single-row latency
(p50/p99 of back-to-back calls) and rows/s for batches of --rows rows. The scoring is onnxruntime's alone
(``Model.runtime.run``), no HTTP: the upper bound of what a server gets from the device. It also prints
where TABSERVE_EXECUTION_PROVIDERS=auto puts each bundle (the GPU only when it runs the whole graph), and with
--sizes the median time of one call per batch size on the CPU (one thread, every core) and with CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tabserve.core import runtime
from tabserve.core.bundle import read_bundle, resolve_bundle_dir
from tabserve.core.model import Model
from tabserve.core.runtime import CPU, RuntimeOptions

CUDA = "CUDAExecutionProvider"


def demo_bundles(folder: Path) -> list[Path]:
    """The demo random forest and a linear model on the same data (needs the [train] extra)."""
    import pandas as pd
    from sklearn.datasets import make_regression

    from tabserve.training import demo, train_demo, train_file

    forest = train_demo(dest=folder / "demo-forest")
    X, y = make_regression(n_samples=demo.N_SAMPLES, n_features=demo.N_FEATURES, noise=0.1,
                           random_state=demo.SEED)
    csv = folder / "demo.csv"
    frame = pd.DataFrame(X, columns=[f"feature_{i}" for i in range(X.shape[1])]).assign(target=y)
    frame.to_csv(csv, index=False)
    linear = train_file(csv, "target", estimator="linear", name="demo-linear", dest=folder / "demo-linear")
    return [forest, linear.path]


def rows_for(model: Model, n: int, seed: int = 0) -> np.ndarray:
    """Rows inside the training range of every feature (what the manifest recorded)."""
    if len(model.manifest.features_of("numeric")) != model.schema.count:
        raise SystemExit(f"{model.name}: categorical features are not supported by this check")
    return runtime.training_range_rows(model.manifest, n, model.runtime.input_dtype, seed)


def placement(bundle: Path, providers: tuple[str, ...], x: np.ndarray) -> dict[str, int]:
    """Nodes run per provider, from one profiled call."""
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(read_bundle(bundle).onnx_bytes, sess_options=so,
                                       providers=list(providers))
        session.run(None, {session.get_inputs()[0].name: x[:1]})
        events = json.loads(Path(session.end_profiling()).read_text())
    return dict(Counter(e["args"]["provider"] for e in events
                        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")))


def single_row(model: Model, x: np.ndarray, seconds: float) -> dict[str, float]:
    one = x[:1].copy()
    for _ in range(50):
        model.runtime.run(one)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        model.runtime.run(one)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"p50_us": times[len(times) // 2] * 1e6, "p99_us": times[int(len(times) * 0.99)] * 1e6,
            "calls_per_s": len(times) / sum(times)}


def batch(model: Model, x: np.ndarray, seconds: float) -> dict[str, float]:
    model.runtime.run(x)  # first call: allocations, CUDA kernels' first launch
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t0 = time.perf_counter()
        model.runtime.run(x)
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    return {"rows": len(x), "best_ms": best * 1e3, "median_ms": median * 1e3, "rows_per_s": len(x) / median}


def differences(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.finfo(np.float64).tiny)
    return {"max_abs": float(diff.max(initial=0.0)), "max_rel": float((diff / scale).max(initial=0.0))}


def check(bundle: Path, args: argparse.Namespace, cuda_reason: str | None) -> dict[str, Any]:
    bundle = resolve_bundle_dir(bundle)
    runs: dict[str, Any] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    provider_sets = {"cpu": (CPU,)} if cuda_reason else {"cpu": (CPU,), "cuda": (CUDA, CPU)}
    for label, providers in provider_sets.items():
        model = Model.from_bundle(read_bundle(bundle), RuntimeOptions(intra_op_threads=args.threads,
                                                                      providers=providers))
        x = rows_for(model, args.rows)
        outputs[label] = model.runtime.run(x)
        runs[label] = {"requested": list(providers), "used": list(model.runtime.providers),
                       "nodes": placement(bundle, providers, x),
                       "one_row": single_row(model, x, args.seconds), "batch": batch(model, x, args.seconds)}
    result: dict[str, Any] = {"bundle": str(bundle), "runs": runs}
    if not cuda_reason:
        source = read_bundle(bundle)
        result["auto"] = runtime.placement(source.onnx_bytes, RuntimeOptions(providers=(CUDA, CPU), auto=True),
                                           source.manifest)[0][0]
    if args.sizes:
        result["sizes"], result["size_rows"] = by_size(bundle, args.sizes, cuda_reason), args.sizes
    if "cuda" in outputs:
        diffs = [differences(c, g) for c, g in zip(outputs["cpu"], outputs["cuda"], strict=True)
                 if np.asarray(c).dtype.kind in "fiu"]
        worst = {"max_abs": max(d["max_abs"] for d in diffs), "max_rel": max(d["max_rel"] for d in diffs)}
        labels_equal = all(np.array_equal(c, g) for c, g in zip(outputs["cpu"], outputs["cuda"], strict=True)
                           if np.asarray(c).dtype.kind not in "fiu")
        worst["within_tolerance"] = labels_equal and all(
            np.allclose(np.asarray(c, np.float64), np.asarray(g, np.float64), rtol=args.rtol, atol=args.atol)
            for c, g in zip(outputs["cpu"], outputs["cuda"], strict=True) if np.asarray(c).dtype.kind in "fiu")
        result["cuda_vs_cpu"] = worst
    return result


def by_size(bundle: Path, sizes: list[int], cuda_reason: str | None) -> dict[str, list[float]]:
    """Median microseconds of one call, per batch size, on the CPU (1 thread; every core) and with CUDA."""
    setups = {"cpu, 1 thread": RuntimeOptions(providers=(CPU,)),
              "cpu, all cores": RuntimeOptions(intra_op_threads=0, providers=(CPU,))}
    if not cuda_reason:
        setups["cuda"] = RuntimeOptions(providers=(CUDA, CPU))
    out = {}
    for label, options in setups.items():
        model = Model.from_bundle(read_bundle(bundle), options)
        x = rows_for(model, max(sizes), seed=1)
        medians = []
        for n in sizes:
            model.runtime.run(x[:n])
            times, deadline = [], time.perf_counter() + 0.4
            while time.perf_counter() < deadline or len(times) < 5:
                t0 = time.perf_counter()
                model.runtime.run(x[:n])
                times.append(time.perf_counter() - t0)
            medians.append(statistics.median(times) * 1e6)
        out[label] = medians
    return out


def cuda_unavailable() -> str | None:
    if CUDA not in ort.get_available_providers():
        return (f"this onnxruntime ({ort.__version__}, providers {', '.join(ort.get_available_providers())}) "
                "has no CUDA provider: install onnxruntime-gpu (the CUDA image has it)")
    return None


def report(results: list[dict[str, Any]], cuda_reason: str | None) -> None:
    print(f"onnxruntime {ort.__version__}; available providers: {', '.join(ort.get_available_providers())}")
    if cuda_reason:
        print(f"CUDA: unavailable - {cuda_reason}")
    for res in results:
        print(f"\n{res['bundle']}")
        for label, run in res["runs"].items():
            nodes = ", ".join(f"{p.removesuffix('ExecutionProvider')} {n}" for p, n in run["nodes"].items())
            one, big = run["one_row"], run["batch"]
            print(f"  {label:>4}: session uses {run['used'][0]:<22} nodes run by: {nodes}")
            print(f"        1 row: p50 {one['p50_us']:9.1f} us  p99 {one['p99_us']:9.1f} us  "
                  f"{one['calls_per_s']:10.0f} calls/s")
            print(f"        {big['rows']:,} rows: median {big['median_ms']:9.1f} ms  best {big['best_ms']:9.1f} ms  "
                  f"{big['rows_per_s']:12,.0f} rows/s")
            if run["used"][0] != run["requested"][0]:
                print(f"        note: asked for {run['requested'][0]} but the session fell back to {run['used'][0]}")
        if "auto" in res:
            print(f"  TABSERVE_EXECUTION_PROVIDERS=auto puts it on: {res['auto']}")
        for label, medians in res.get("sizes", {}).items():
            cells = "  ".join(f"{n:>6,}: {us:9.1f}" for n, us in zip(res["size_rows"], medians, strict=True))
            print(f"  us per call, {label:<15} {cells}")
        if "cuda_vs_cpu" in res:
            d = res["cuda_vs_cpu"]
            verdict = "OK" if d["within_tolerance"] else "OUTSIDE TOLERANCE"
            print(f"  CUDA vs CPU predictions: max abs {d['max_abs']:.3g}, max rel {d['max_rel']:.3g} -> {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path, help="bundle folders (default: two demo models)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per batch (default 100000)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime CPU threads (0: one per core)")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--sizes", type=lambda v: [int(n) for n in v.split(",")], default=[],
                        help="also time one call per batch size, e.g. 1,16,256,4096,65536")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    cuda_reason = cuda_unavailable()
    with tempfile.TemporaryDirectory() as tmp:
        bundles = args.bundles or demo_bundles(Path(tmp))
        results = [check(b, args, cuda_reason) for b in bundles]
    report(results, cuda_reason)
    if args.json:
        args.json.write_text(json.dumps({"cuda_unavailable": cuda_reason, "cpus": os.cpu_count(),
                                         "results": results}, indent=2))
    failed = [r for r in results if not r.get("cuda_vs_cpu", {"within_tolerance": True})["within_tolerance"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
