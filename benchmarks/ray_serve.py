"""Ray Serve against plain ``tabserve serve`` on one machine: requests/s, p50/p99 and memory.

    .venv/bin/python benchmarks/ray_serve.py [--bundle DIR] [--concurrency 16] [--duration 10]
                                             [--configs plain,ray1,ray2] [--rows 1]

For each configuration, starts the server as a process on 127.0.0.1 (plain: ``tabserve serve BUNDLE``, one
uvicorn worker; rayN: ``tabserve serve BUNDLE --ray --replicas N`` on a local Ray instance of its own), waits
until /readyz answers, runs ``tabserve bench --url URL -c C --duration S --json`` (closed-loop keep-alive load),
reads the peak memory of the server's process tree (RSS summed over its processes: Ray's raylet, GCS,
controller, proxy and replicas included), then stops it with SIGTERM. Access logs off everywhere.
The load generator runs on the same machine and takes CPU from the server: compare rows, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from procs import free_port, tree_rss


def measure(bundle: Path, config: str, concurrency: int, duration: float, rows: int) -> dict:
    port = free_port()
    extra = [] if config == "plain" else ["--ray", "--replicas", config.removeprefix("ray")]
    cmd = [sys.executable, "-m", "tabserve", "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", *extra]
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in the finally below
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray instance, not a cluster
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"{config}: the server exited with {server.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        ready_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, "-m", "tabserve", "bench", "--url", base, "-c", str(concurrency),
                              "--duration", str(duration), "--rows", str(rows), "--json"],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        result["rss_mb"] = tree_rss(psutil.Process(server.pid)) / 1e6
        result["ready_s"] = ready_s
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle to serve (default: the demo model, trained here)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    ap.add_argument("--configs", default="plain,ray1,ray2")
    args = ap.parse_args()
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(dest=Path(tempfile.mkdtemp(prefix="tabserve-ray-bench-")) / "demo")
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.1f} concurrency={args.concurrency} "
          f"duration={args.duration}s rows/request={args.rows}")
    print(f"{'config':<7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'RSS MB':>8} {'ready s':>8}")
    for config in args.configs.split(","):
        r = measure(bundle, config, args.concurrency, args.duration, args.rows)
        bad = r["errors"] + sum(v for k, v in r["statuses"].items() if k != "200")
        print(f"{config:<7} {r['req_per_s']:>8,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {bad:>7} "
              f"{r['rss_mb']:>8,.0f} {r['ready_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
