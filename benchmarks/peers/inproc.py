"""The model's cost without HTTP: the in-process onnxruntime numbers the tabserve rows are held against.

usage: python benchmarks/peers/inproc.py MODEL_DIR [BUNDLE_DIR]   (run.py runs it pinned to the server's CPU)

Prints one JSON object: the median wall time (µs) of one `InferenceSession.run` on 1 row and on the 1000
request rows (and the mean CPU time, *_cpu_us), for skl2onnx's float graph (MODEL_DIR/model.onnx; the reference of issue #17's batch targets)
with one intra-op thread and with onnxruntime's default options, and, given a bundle, for tabserve's own
float64 graph with one thread. The default options are context only: onnxruntime's thread pool sets its own
affinity and uses every core even under taskset, so that number is not a one-core result.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def median_us(call, repeat: int, warmup: int = 20) -> tuple[float, float]:
    """(median wall time, mean CPU time of this process) per call, in µs. On a machine shared with other work,
    the CPU time is the steadier figure: it leaves out the time the core was busy with someone else."""
    for _ in range(warmup):
        call()
    times = []
    cpu = time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return round(statistics.median(times) * 1e6, 2), round(cpu / repeat * 1e6, 2)


def timings(graph: Path, rows: np.ndarray, threads: int | None) -> dict[str, float]:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    one, many = rows[:1], rows
    row1_us, row1_cpu_us = median_us(lambda: session.run(None, {name: one}), 2000)
    rows1000_us, rows1000_cpu_us = median_us(lambda: session.run(None, {name: many}), 200, warmup=5)
    return {"row1_us": row1_us, "rows1000_us": rows1000_us, "row1_cpu_us": row1_cpu_us,
            "rows1000_cpu_us": rows1000_cpu_us}


def main() -> None:
    model_dir = Path(sys.argv[1])
    rows = np.loadtxt(model_dir / "rows1000.csv", delimiter=",", dtype=np.float32)
    out = {"onnxruntime": ort.__version__,
           "float_1thread": timings(model_dir / "model.onnx", rows, 1),
           "float_default": timings(model_dir / "model.onnx", rows, None)}
    if len(sys.argv) > 2 and (Path(sys.argv[2]) / "model.onnx").exists():
        out["tabserve_graph_1thread"] = timings(Path(sys.argv[2]) / "model.onnx", rows.astype(np.float64), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
