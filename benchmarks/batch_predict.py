"""Batch scoring throughput and memory: ``tabserve predict`` with and without ``--ray`` on a generated file.

    .venv/bin/python benchmarks/batch_predict.py [--rows 1000000] [--bundle DIR] [--formats csv,parquet]
                                                [--modes local,ray] [--workdir DIR] [--batch-rows N]

Writes an input file of --rows rows (the demo model's 5 features drawn N(0, 1), plus an id column) in each
format, then runs ``tabserve predict IN -o OUT.parquet`` as a separate process for each mode, and prints the
wall time of the command (start-up, model load, a local Ray instance's start for --ray: all included), rows/s,
and the peak memory of the command's whole process tree (RSS summed over its processes, sampled every 0.1 s:
Ray's own processes included). The demo model is trained into --workdir when no --bundle is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from procs import tree_rss


def make_input(path: Path, rows: int) -> None:
    """Written chunk by chunk, like the files the command reads: a 1M-row file never sits in memory whole."""
    rng = np.random.default_rng(0)
    chunk = 100_000
    writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        x = rng.normal(size=(n, 5))
        table = pa.table({"id": np.arange(start, start + n), **{f"feature_{i}": x[:, i] for i in range(5)}})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema) if path.suffix == ".parquet" else \
                pa_csv.CSVWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def run(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes of the process tree, stderr's last line)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        ps = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(ps))
            except psutil.Error:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, peak, err.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bundle", type=Path, help="bundle to score with (default: the demo model, trained here)")
    ap.add_argument("--formats", default="csv,parquet")
    ap.add_argument("--modes", default="local,ray")
    ap.add_argument("--batch-rows", type=int, default=65_536)
    ap.add_argument("--workdir", type=Path, help="where the files go (default: a temporary folder)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tabserve-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(dest=work / "demo", overwrite=True)
    tabserve = [sys.executable, "-m", "tabserve", "predict"]
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.1f} rows={args.rows:,} bundle={bundle}")
    print(f"{'mode':<6} {'input':<8} {'MB':>7} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}")
    for fmt in args.formats.split(","):
        src = work / f"in-{args.rows}.{fmt}"
        if not src.exists():
            make_input(src, args.rows)
        for mode in args.modes.split(","):
            dest = work / f"out-{mode}-{fmt}.parquet"
            cmd = [*tabserve, str(src), "-o", str(dest), "--model", str(bundle), "--batch-rows",
                   str(args.batch_rows), "--no-progress", *(["--ray"] if mode == "ray" else [])]
            seconds, peak, _ = run(cmd)
            rows = pq.ParquetFile(dest).metadata.num_rows
            assert rows == args.rows, (rows, args.rows)
            print(f"{mode:<6} {fmt:<8} {src.stat().st_size / 1e6:>7.0f} {seconds:>8.2f} {rows / seconds:>10,.0f} "
                  f"{peak / 1e6:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
