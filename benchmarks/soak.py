"""Soak: twice the measured capacity for minutes on 127.0.0.1; only 429/503 shed, no other 5xx, flat memory.

    .venv/bin/python benchmarks/soak.py [--seconds 180] [--bundle DIR] [--clients 2] [--connections 64]

1. Starts `tabserve serve` (one worker, no access log) and measures its capacity closed-loop: every
   connection sends its next request as soon as the last one is answered, for --calibrate-seconds.
   The mix: 80% one-row v1 predictions, 10% v1 batches of 32 rows, 10% v2 infers of 8 rows.
2. Restarts it with admission control on: --max-concurrent-requests (96), and a rate limit of
   --rate-limit-factor (0.5) x the measured capacity in rows per second (0: no rate limit); all the load
   comes from one address, so it is one client.
3. Offers 2x the capacity (requests per second, open loop: requests leave on a schedule, whether or
   not earlier ones were answered) for --seconds from --clients processes, sampling the server's RSS
   every --sample-seconds.

Passes (exit 0) when every answer is 200, 429 or 503, no connection fails, and the RSS after warm-up
grows less than --max-growth-mb. Without --bundle the demo model is trained into a temporary home.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from procs import start_server

from tabserve.cli.loadgen import read_response

ROW = [0.1, 0.2, 0.3, 0.4, 0.5]


def _request(path: str, payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def request_mix(model: str) -> list[tuple[bytes, int]]:
    """Ten (request, rows) slots: 8 single rows, 1 v1 batch of 32, 1 v2 infer of 8."""
    single = _request("/api/v1/predict", {"data": ROW})
    batch = _request("/api/v1/predict/batch", {"data": [ROW] * 32})
    v2 = _request(f"/v2/models/{model}/infer",
                  {"inputs": [{"name": "X", "shape": [8, 5], "datatype": "FP32", "data": ROW * 8}]})
    return [(single, 1)] * 8 + [(batch, 32), (v2, 8)]


# -- the load generator (one asyncio loop per client process) --------------------------------------------

async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    return await read_response(reader)


async def _drive(port: int, mix: list[tuple[bytes, int]], rate: float, seconds: float, connections: int,
                 closed_loop: bool) -> dict:
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    end = time.perf_counter() + seconds
    pending: set[asyncio.Task] = set()

    async def one(conn: tuple, request: bytes) -> None:
        t0 = time.perf_counter()
        try:
            status = await asyncio.wait_for(_exchange(*conn, request), 30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            counts[f"error:{type(exc).__name__}"] += 1
            conn[1].close()
            try:
                conn = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
        else:
            counts[str(status)] += 1
            if status == 200 and random.random() < 0.05:
                latencies.append(time.perf_counter() - t0)
        idle.put_nowait(conn)

    rng = random.Random(os.getpid())
    if closed_loop:
        async def loop_one() -> None:
            while time.perf_counter() < end:
                await one(await idle.get(), rng.choice(mix)[0])
        await asyncio.gather(*(loop_one() for _ in range(connections)))
    else:
        interval, due = 1.0 / rate, time.perf_counter()
        while due < end:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            due += interval
            if idle.empty():
                counts["client_backlog"] += 1  # every connection is waiting: this request is not sent
                continue
            task = asyncio.create_task(one(idle.get_nowait(), rng.choice(mix)[0]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return {"counts": dict(counts), "latencies": latencies}


def _client(args: tuple, out: mp.Queue) -> None:
    out.put(asyncio.run(_drive(*args)))


def drive(port: int, mix: list, rate: float, seconds: float, clients: int, connections: int,
          closed_loop: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_client, args=((port, mix, rate / clients, seconds, connections, closed_loop), out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    for r in results:
        counts.update(r["counts"])
        latencies += r["latencies"]
    return {"counts": counts, "latencies": sorted(latencies)}


# -- the server ---------------------------------------------------------------------------------------------

def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (v - mv) for t, v in samples) / var if var else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180, help="soak duration (default 180)")
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: train the demo model)")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections per client")
    parser.add_argument("--calibrate-seconds", type=float, default=10)
    parser.add_argument("--load-factor", type=float, default=2.0, help="offered load / capacity (default 2)")
    # Under overload a server answers fewer requests than closed-loop (shedding costs too, and here the load
    # generator shares the CPUs): half the capacity makes the rate limit bite alongside the concurrency limit.
    parser.add_argument("--rate-limit-factor", type=float, default=0.5,
                        help="rate limit = this x capacity, in rows/s (default 0.5; 0 = none)")
    parser.add_argument("--max-concurrent-requests", type=int, default=96)
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--max-growth-mb", type=float, default=25,
                        help="largest RSS growth after warm-up still called flat (default 25 MB)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tabserve-soak-"))
    log = home / "server.log"
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(home=home)
    model = json.loads((Path(bundle) / "tabserve.json").read_text())["name"]
    mix = request_mix(model)
    rows_per_request = sum(r for _, r in mix) / len(mix)

    proc, port = start_server(bundle, home, log)
    drive(port, mix, 0, 2, args.clients, args.connections, closed_loop=True)  # warm-up
    cal = drive(port, mix, 0, args.calibrate_seconds, args.clients, args.connections, closed_loop=True)
    stop_server(proc)
    capacity = cal["counts"].get("200", 0) / args.calibrate_seconds
    print(f"capacity: {capacity:.0f} requests/s ({capacity * rows_per_request:.0f} rows/s) closed-loop with "
          f"{args.clients}x{args.connections} connections; mix of {rows_per_request:.1f} rows per request")

    flags = ["--max-concurrent-requests", str(args.max_concurrent_requests)]
    if args.rate_limit_factor > 0:
        flags += ["--rate-limit", f"{max(1, int(capacity * rows_per_request * args.rate_limit_factor))}/second"]
    proc, port = start_server(bundle, home, log, *flags)
    offered = capacity * args.load_factor
    print(f"soak: {offered:.0f} requests/s offered for {args.seconds:.0f} s; server flags: {' '.join(flags)}")

    samples: list[tuple[float, float]] = []
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    clients = [ctx.Process(target=_client, args=((port, mix, offered / args.clients, args.seconds,
                                                   args.connections, False), out)) for _ in range(args.clients)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    while any(c.is_alive() for c in clients) and time.monotonic() - t0 < args.seconds + 120:
        samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
        if out.qsize() >= len(clients):
            break
        time.sleep(args.sample_seconds)
    results = [out.get(timeout=120) for _ in clients]
    for c in clients:
        c.join(timeout=30)
    samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
    exit_code = stop_server(proc)

    counts: Counter[str] = Counter()
    latencies: list[float] = []
    for r in results:
        counts.update(r["counts"])
        latencies += r["latencies"]
    latencies.sort()
    sent = sum(v for k, v in counts.items() if k != "client_backlog")
    bad = {k: v for k, v in counts.items() if k not in ("200", "429", "503", "client_backlog")}
    warm = [s for s in samples if s[0] >= min(30.0, args.seconds / 5)] or samples
    growth = max(v for _, v in warm) - warm[0][1]
    flat = growth < args.max_growth_mb
    print(f"sent {sent} requests in {args.seconds:.0f} s ({sent / args.seconds:.0f}/s; "
          f"{counts.get('client_backlog', 0)} not sent: every connection busy)")
    for status in sorted(k for k in counts if k != "client_backlog"):
        print(f"  {status}: {counts[status]} ({100 * counts[status] / max(sent, 1):.1f}%)")
    print(f"served: {counts.get('200', 0) / args.seconds:.0f} requests/s; 200 latency p50 "
          f"{1000 * percentile(latencies, 0.5):.1f} ms, p99 {1000 * percentile(latencies, 0.99):.1f} ms")
    print(f"server RSS (MB): start {samples[0][1]:.1f}, after warm-up {warm[0][1]:.1f}, max "
          f"{max(v for _, v in samples):.1f}, end {samples[-1][1]:.1f}; growth after warm-up {growth:.1f} MB, "
          f"slope {slope_per_minute(warm):+.2f} MB/min ({'flat' if flat else 'GROWING'})")
    print(f"server exit status after SIGTERM: {exit_code}")
    passed = not bad and flat and exit_code == 0 and counts.get("200", 0) > 0
    print("PASS" if passed else f"FAIL: unexpected {bad}" if bad else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
