"""What the payload log costs a prediction: two `tabserve serve` processes on the same model, one with
--payload-log (every request logged), one without, loaded in alternating rounds at the same concurrency.

    .venv/bin/python benchmarks/payload_cost.py [--concurrency 32] [--seconds 8] [--rounds 3] [--bundle DIR]
        [--sample FRACTION]

The load is Python asyncio on raw keep-alive HTTP/1.1 connections to 127.0.0.1 (one single-row
POST /api/v1/predict after another per connection). Prints requests/s and p50/p99 latency per round and
mode, the server's CPU time per request (all its threads, the log's writer included, read from the
scheduler's nanosecond counters in /proc/PID/task/*/schedstat where Linux has them: the tick-sampled user +
system times misplace short, timer-woken stretches like the writer's; the figure least disturbed by other work
on a shared machine), the medians and the cost, and what the log wrote and dropped (its /metrics counters). Rounds alternate so that a machine busy with something else
weighs on both modes alike; the paired figure is the median of each round's ratio. ``--sample 0`` is the
control: the log configured, nothing logged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from procs import start_server

BODY = b'{"data": [0.1, -0.2, 0.3, 0.5, -1.0]}'
REQUEST = (b"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def connection(port: int, until: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()


async def load(port: int, concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(connection(port, start + seconds, latencies, errors) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return (len(ordered) / elapsed, ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000,
            len(errors))


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of all of ``proc``'s threads so far, to the nanosecond where the scheduler says (Linux)."""
    try:
        total = 0
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return total / 1e9
    except OSError:
        return sum(proc.cpu_times()[:2])


def counters(port: int) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    out: dict[str, float] = {}
    for name in ("tabserve_payload_rows_written_total", "tabserve_payload_dropped_total"):
        out[name] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--bundle", type=Path, help="default: the demo model, trained into a temp folder")
    parser.add_argument("--sample", type=float, default=1.0, help="the logged server's TABSERVE_PAYLOAD_SAMPLE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tabserve-payload-cost-") as tmp:
        root = Path(tmp)
        bundle = args.bundle
        if bundle is None:
            from tabserve.training import train_demo

            bundle = train_demo(dest=root / "demo")
        log = root / "server.log"
        plain, plain_port = start_server(bundle, root / "home-a", log)
        os.environ["TABSERVE_PAYLOAD_SAMPLE"] = str(args.sample)
        logged, logged_port = start_server(bundle, root / "home-b", log, "--payload-log", str(root / "payload"))
        del os.environ["TABSERVE_PAYLOAD_SAMPLE"]
        try:
            ports = {"plain": plain_port, "payload-log": logged_port}
            procs = {"plain": psutil.Process(plain.pid), "payload-log": psutil.Process(logged.pid)}
            for port in ports.values():
                asyncio.run(load(port, args.concurrency, args.warmup))
            results: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in ports}
            for r in range(args.rounds):
                order = list(ports) if r % 2 == 0 else list(reversed(ports))
                for mode in order:
                    before = cpu_seconds(procs[mode])
                    rps, p50, p99, errors = asyncio.run(load(ports[mode], args.concurrency, args.seconds))
                    cpu_us = (cpu_seconds(procs[mode]) - before) / (rps * args.seconds) * 1e6
                    results[mode].append((rps, p50, p99, cpu_us))
                    print(f"round {r + 1} {mode:<12} {rps:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                          f"server CPU {cpu_us:6.1f} us/request  errors {errors}", flush=True)
            median = {m: statistics.median(x[0] for x in v) for m, v in results.items()}
            p99 = {m: statistics.median(x[2] for x in v) for m, v in results.items()}
            cpu = {m: statistics.median(x[3] for x in v) for m, v in results.items()}
            print(f"\nc{args.concurrency}, {args.rounds} rounds of {args.seconds:g} s (load average "
                  f"{psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs): median {median['plain']:.0f} req/s "
                  f"plain, {median['payload-log']:.0f} with the payload log ({median['payload-log'] / median['plain']:.3f}x); "
                  f"p99 {p99['plain']:.2f} vs {p99['payload-log']:.2f} ms; server CPU per request "
                  f"{cpu['plain']:.1f} vs {cpu['payload-log']:.1f} us "
                  f"({(cpu['payload-log'] / cpu['plain'] - 1) * 100:+.1f}%)")
            # Each round's two modes ran back to back: their ratio is little moved by load that drifts over minutes
            cpu_ratio = statistics.median(b[3] / a[3] for a, b in zip(results["plain"], results["payload-log"],
                                                                      strict=True))
            rps_ratio = statistics.median(b[0] / a[0] for a, b in zip(results["plain"], results["payload-log"],
                                                                     strict=True))
            print(f"paired by round (median of the {args.rounds} ratios): server CPU per request "
                  f"{(cpu_ratio - 1) * 100:+.1f}%, req/s {rps_ratio:.3f}x")
            time.sleep(1.5)
            print("payload log counters:", counters(logged_port))
        finally:
            for proc in (plain, logged):
                proc.terminate()
                proc.wait(timeout=30)
        files = sorted((root / "payload").glob("*/date=*/part-*.parquet"))
        if files:
            import pyarrow.parquet as pq

            rows = sum(pq.read_metadata(f).num_rows for f in files)
            print(f"after shutdown: {len(files)} Parquet files, {rows} rows "
                  f"({sum(f.stat().st_size for f in files) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
