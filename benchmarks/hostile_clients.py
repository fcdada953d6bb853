"""A normal client's view while hostile clients hold connections (issue #14 items 2 and 3), on 127.0.0.1.

    .venv/bin/python benchmarks/hostile_clients.py [--bundle DIR] [--requests 2000] [--slow 200] [--stalled 20]
                                                   [--plain-uvicorn]

Starts `tabserve serve` (one worker, --max-concurrent-requests 50, default header/body timeouts) and, from
another process, holds --slow connections sending a request head one byte a second and --stalled
predictions whose body stops after 10 bytes; a connection the server closes (408) is opened again at once,
as an attacker would. Meanwhile one normal client sends --requests one-row predictions, one after the other
on a keep-alive connection. Prints the normal client's status counts and p50/p99 latency, the server's RSS
before and after, what the hostile connections were answered, then the time and status of one request with
a 32 MB header, and a normal request's latency while it is sent.

--plain-uvicorn runs the same against `uvicorn --factory tabserve.api.app:create_app_from_env` with uvicorn's
own protocol (the app, and its concurrency counting, unchanged): what the transport adds. Bounded: about
30 s with the defaults, plus the demo model's training when no --bundle is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
from procs import free_port, tree_rss, wait_ready

from tabserve.cli.loadgen import read_response

BODY = json.dumps({"data": [0.1, 0.2, 0.3, 0.4, 0.5]}).encode()
PREDICT = (b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
SLOW_HEAD = b"POST /api/v1/predict HTTP/1.1\r\nHost: tabserve\r\nUser-Agent: " + b"s" * 200


def start(bundle: Path, home: Path, plain: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "TABSERVE_HOME": str(home), "TABSERVE_ACCESS_LOG": "false",
           "TABSERVE_MAX_CONCURRENT_REQUESTS": "50", "TABSERVE_MODEL_PATH": str(bundle)}
    if plain:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "tabserve.api.app:create_app_from_env",
               "--port", str(port), "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "tabserve", "serve", str(bundle), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=(home / "server.log").open("w"), stderr=subprocess.STDOUT)
    wait_ready(proc, port, home / "server.log")
    return proc, port


# -- the hostile side (its own process) ------------------------------------------------------------------

async def _hold(port: int, stalled: bool, stop_at: float, answers: Counter) -> None:
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            answers["connect failed"] += 1
            await asyncio.sleep(0.1)
            continue
        read = asyncio.ensure_future(reader.read(4096))
        try:
            if stalled:
                writer.write(PREDICT[:len(PREDICT) - len(BODY) + 10])
            i = 0
            while time.monotonic() < stop_at and not read.done():
                if not stalled and i < len(SLOW_HEAD):
                    writer.write(SLOW_HEAD[i:i + 1])
                    i += 1
                await asyncio.wait([read], timeout=1.0)
            data = read.result() if read.done() else b""
            if read.done():
                answers[data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1") else "closed"] += 1
            else:
                answers["still open at the end"] += 1
        except (OSError, asyncio.CancelledError):
            answers["reset"] += 1
        finally:
            read.cancel()
            writer.close()


def hostile(port: int, slow: int, stalled: int, seconds: float, out: mp.Queue) -> None:
    async def run() -> Counter:
        answers: Counter = Counter()
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_hold(port, False, stop_at, answers) for _ in range(slow)),
                             *(_hold(port, True, stop_at, answers) for _ in range(stalled)))
        return answers

    out.put(dict(asyncio.run(run())))


# -- the normal client ---------------------------------------------------------------------------------

async def normal_client(port: int, n: int) -> tuple[Counter, list[float]]:
    statuses: Counter = Counter()
    latencies: list[float] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            writer.write(PREDICT)
            status = await asyncio.wait_for(read_response(reader), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            statuses["error"] += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        latencies.append(time.perf_counter() - t0)
        statuses[status] += 1
    writer.close()
    return statuses, latencies


def huge_header(port: int, size: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        except OSError:
            pass
        try:
            status = s.recv(64).split(b" ", 2)[1].decode() or "closed"
        except (OSError, IndexError):
            status = "no answer"
    return status, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: train the demo model)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--stalled", type=int, default=20)
    parser.add_argument("--plain-uvicorn", action="store_true", help="uvicorn's own protocol, for comparison")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tabserve-hostile-"))
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(home=home)
    proc, port = start(Path(bundle), home, args.plain_uvicorn)
    server = psutil.Process(proc.pid)
    try:
        asyncio.run(normal_client(port, 200))  # warm-up
        rss_before = tree_rss(server)
        queue: mp.Queue = mp.Queue()
        seconds = 15.0
        attacker = mp.Process(target=hostile, args=(port, args.slow, args.stalled, seconds, queue))
        attacker.start()
        time.sleep(2.0)  # the hostile connections are open and dripping
        t0 = time.perf_counter()
        statuses, latencies = asyncio.run(normal_client(port, args.requests))
        took = time.perf_counter() - t0
        open_conns = len(getattr(server, "net_connections", server.connections)(kind="tcp"))
        attacker.join(seconds + 30)
        answers = queue.get(timeout=5) if not queue.empty() else {}
        rss_after = tree_rss(server)

        ok = statuses.get(200, 0) / max(1, sum(statuses.values()))
        lat = sorted(latencies)
        print(f"server: {'plain uvicorn' if args.plain_uvicorn else 'tabserve serve'}, "
              f"max_concurrent_requests=50, {args.slow} slow heads + {args.stalled} stalled bodies held")
        print(f"normal client: {args.requests} sequential one-row predictions in {took:.1f} s; statuses "
              f"{dict(statuses)} ({ok:.1%} 200)")
        if lat:
            print(f"  latency p50 {statistics.median(lat) * 1000:.2f} ms, p99 {lat[int(0.99 * (len(lat) - 1))] * 1000:.2f} "
                  f"ms, max {lat[-1] * 1000:.1f} ms")
        print(f"server TCP connections during the run: {open_conns}")
        print(f"hostile connections' outcomes over {seconds:.0f} s (reconnecting at once): {answers}")
        print(f"server RSS: {rss_before / 2**20:.0f} MB before, {rss_after / 2**20:.0f} MB after")

        result: list[tuple[str, float]] = []
        big = threading.Thread(target=lambda: result.append(huge_header(port, 32 * 1024 * 1024)))
        big.start()
        time.sleep(0.05)
        during = asyncio.run(normal_client(port, 20))[1]
        big.join(120)
        status, big_s = result[0] if result else ("no answer", float("nan"))
        print(f"32 MB header: status {status} after {big_s:.2f} s; a normal request meanwhile: max "
              f"{max(during) * 1000:.1f} ms; RSS {tree_rss(server) / 2**20:.0f} MB")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
