"""Large bodies: another client's latency while an attacker sends 12 MB, 10^6-row batches back to back.

    .venv/bin/python benchmarks/large_bodies.py [--seconds 15] [--attackers 3] [--attack v1|v2|binary]
                                                [--bundle DIR] [--budget BYTES] [-- SERVER FLAGS...]

Starts `tabserve serve` (one worker, no access log) on the demo model (trained into a temporary home without
--bundle). For --seconds, --attackers connections (in a process of their own) each send a 10^6-row body as
soon as the last one was answered: v1 ``{"data": [[1,2,3,4,5], ...]}`` (12 MB), v2 JSON ``[10^6, 5]`` with
nested rows (12 MB) or a v2 binary FP32 tensor (20 MB) -- each under the 16 MiB body limit but over the
10,000-row limit (the binary one needs ``-- --max-body-bytes 33554432``). Meanwhile one client sends
one-row v1 predictions one after the other on a keep-alive connection. Prints the victim's p50/p99 and
statuses, the attacker's statuses and the server's RSS before, at its peak (sampled every 50 ms) and after.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
from procs import start_server, tree_rss

from tabserve.cli.loadgen import read_response

ROWS = 10**6
ONE_ROW = b'{"data":[0.1,0.2,0.3,0.4,0.5]}'


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def attack_request(kind: str, model: str) -> bytes:
    nested = b",".join([b"[1,2,3,4,5]"] * ROWS)
    if kind == "v1":
        return _post("/api/v1/predict/batch", b'{"data":[' + nested + b"]}")
    if kind == "v2":
        body = b'{"inputs":[{"name":"X","shape":[%d,5],"datatype":"FP32","data":[%s]}]}' % (ROWS, nested)
        return _post(f"/v2/models/{model}/infer", body)
    raw = np.ones((ROWS, 5), dtype="<f4").tobytes()
    header = b'{"inputs":[{"name":"X","shape":[%d,5],"datatype":"FP32","parameters":{"binary_data_size":%d}}]}' % (
        ROWS, len(raw))
    return _post(f"/v2/models/{model}/infer", header + raw, f"Inference-Header-Content-Length: {len(header)}\r\n")


# -- the attacker (its own process, so that building and sending 12 MB never delays the victim's clock) -------

async def _attack_connection(port: int, request: bytes, stop_at: float, counts: Counter) -> None:
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect failed"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while time.monotonic() < stop_at:
                writer.write(request)
                # The server may answer (503, 413) before it reads the body and then close the connection.
                drain = asyncio.ensure_future(writer.drain())
                status = await read_response(reader)
                counts[str(status)] += 1
                try:
                    await drain
                except OSError:
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["connection closed"] += 1
        finally:
            writer.close()


def attacker(port: int, kind: str, model: str, connections: int, seconds: float, out: mp.Queue) -> None:
    request = attack_request(kind, model)
    counts: Counter = Counter()

    async def run() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_attack_connection(port, request, stop_at, counts) for _ in range(connections)))

    asyncio.run(run())
    out.put(dict(counts))


# -- the victim -----------------------------------------------------------------------------------------------

async def victim(port: int, seconds: float, proc: psutil.Process, rss: list[int]) -> tuple[list[float], Counter]:
    request = _post("/api/v1/predict", ONE_ROW)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    counts: Counter = Counter()
    stop_at = time.monotonic() + seconds
    next_sample = 0.0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        writer.write(request)
        counts[str(await read_response(reader))] += 1
        latencies.append(time.perf_counter() - t0)
        if t0 >= next_sample:
            rss.append(tree_rss(proc))
            next_sample = t0 + 0.05
        await asyncio.sleep(0.002)  # ~300 requests a second at most: a client, not a load test
    writer.close()
    return latencies, counts


# -- the server -----------------------------------------------------------------------------------------------

def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--attackers", type=int, default=3, help="concurrent attacking connections (default 3)")
    parser.add_argument("--attack", choices=["v1", "v2", "binary"], default="v1")
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: train the demo model)")
    parser.add_argument("--budget", type=int, help="the server's max_inflight_body_bytes (default: its own)")
    parser.add_argument("flags", nargs="*", help="more `tabserve serve` flags, after --")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tabserve-large-"))
    log = home / "server.log"
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(home=home)
    if args.budget is not None:
        os.environ["TABSERVE_MAX_INFLIGHT_BODY_BYTES"] = str(args.budget)
    proc, port = start_server(bundle, home, log, *args.flags)
    server = psutil.Process(proc.pid)
    print(f"server pid {proc.pid}", file=sys.stderr, flush=True)
    try:
        asyncio.run(victim(port, 2, server, []))  # warm-up
        before = tree_rss(server)
        quiet, quiet_counts = asyncio.run(victim(port, 3, server, []))
        results: mp.Queue = mp.Queue()
        attack = mp.Process(target=attacker, args=(port, args.attack, "demo", args.attackers, args.seconds,
                                                   results))
        attack.start()
        time.sleep(1.0)  # the attacker builds its body and connects
        rss: list[int] = []
        latencies, counts = asyncio.run(victim(port, args.seconds - 1.0, server, rss))
        attack_counts = results.get(timeout=120)
        attack.join(timeout=30)
        time.sleep(2.0)
        after = tree_rss(server)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    mb = 1024 * 1024
    budget = f"; max_inflight_body_bytes {args.budget}" if args.budget is not None else ""
    print(f"large bodies: {args.attackers} connections sending {args.attack} 10^6-row bodies back to back for "
          f"{args.seconds:.0f} s; server flags: {' '.join(args.flags) or '(defaults)'}{budget}")
    print(f"victim, quiet:  {len(quiet)} one-row requests, p50 {percentile_ms(quiet, 0.5):.2f} ms, "
          f"p99 {percentile_ms(quiet, 0.99):.2f} ms, statuses {dict(quiet_counts)}")
    print(f"victim, attack: {len(latencies)} one-row requests, p50 {percentile_ms(latencies, 0.5):.2f} ms, "
          f"p99 {percentile_ms(latencies, 0.99):.2f} ms, max {percentile_ms(latencies, 1.0):.0f} ms, "
          f"statuses {dict(counts)}")
    print(f"attacker statuses: {attack_counts}")
    print(f"server RSS (MB): before {before / mb:.0f}, peak {max(rss, default=0) / mb:.0f}, after {after / mb:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
