"""CPU cost of one request inside tabserve's ASGI app, without the network: the part of a request that is ours.

usage: python benchmarks/hotpath_cost.py [BUNDLE] [--requests 20000] [--concurrency 32] [--profile OUT.prof]
  [--path /api/v1/predict] [--body '{"data": [...]}']

The app is built as ``tabserve serve`` builds it (access log, metrics and range warnings on, as the peers
harness runs it), its lifespan started, then ``--concurrency`` tasks each send ASGI requests in a loop
through fake ``receive``/``send`` callables. Printed: process CPU µs per request (median of 5 runs), and, for
calibration, the same for a bare ASGI app that parses the JSON and answers a constant (the peers harness's
asgi-floor, in process). What uvicorn itself costs (HTTP parsing, the socket) comes on top of both, equally.
The access log goes to /dev/null (the harness sends it to a file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import orjson

DEFAULT_BUNDLE = os.environ.get("PEERS", "/tmp/peers") + "/tabserve/bundle"


def scope_for(path: str, body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def drive(app, path: str, body: bytes, requests: int, concurrency: int) -> tuple[float, int]:
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: dict[int, int] = {}

    async def receive() -> dict:
        return message

    async def worker(n: int) -> None:
        for _ in range(n):
            status = 0

            async def send(msg: dict) -> None:
                nonlocal status
                if msg["type"] == "http.response.start":
                    status = msg["status"]

            await app(scope_for(path, body), receive, send)
            statuses[status] = statuses.get(status, 0) + 1
            await asyncio.sleep(0)  # the loop turns before this client's next request, as it does in a server

    per = requests // concurrency
    c0 = time.process_time()
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    cpu = time.process_time() - c0
    if set(statuses) != {200}:
        raise SystemExit(f"non-200 answers: {statuses}")
    return cpu, per * concurrency


async def floor_app(scope, receive, send) -> None:
    """The peers harness's asgi-floor: read the body, parse it, answer a constant."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    orjson.loads(body)
    out = b'{"prediction":1.0}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default=DEFAULT_BUNDLE)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--path", default="/api/v1/predict")
    parser.add_argument("--body", help="default: the first row of the peers model's rows1000.csv, as v1 JSON")
    parser.add_argument("--profile", help="write a cProfile of one run here")
    parser.add_argument("--no-warm", action="store_true", help="one run of --requests, no warm-up, a floor of "
                        "1 run: for counting instructions under valgrind (two counts, their difference)")
    args = parser.parse_args()
    os.environ.update(TABSERVE_MODEL_PATH=str(Path(args.bundle)), TABSERVE_ACCESS_LOG="true",
                      TABSERVE_METRICS="true", TABSERVE_RANGE_POLICY="warn", TABSERVE_LOG_LEVEL="warning")
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - for the process's life, before serving
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(devnull.fileno(), 1)  # the access log, like the harness's log file
    out = os.fdopen(saved, "w", buffering=1)

    from tabserve.api.app import create_app
    from tabserve.settings import Settings

    app = create_app(Settings())
    if os.environ.get("HOTPATH_GC") == "freeze":
        import gc

        gc.freeze()
    elif os.environ.get("HOTPATH_GC") == "off":
        import gc

        gc.disable()
    if args.body:
        body = args.body.encode()
    else:
        first = (Path(args.bundle).parent.parent / "model" / "rows1000.csv").read_text().splitlines()[0]
        body = b'{"data":[' + first.encode() + b"]}"
    async with app.router.lifespan_context(app):
        for _ in range(600):
            if app.state.models.ready:
                break
            await asyncio.sleep(0.05)
        if not args.no_warm:
            await drive(app, args.path, body, 2000, args.concurrency)  # warm
        ours, floor = [], []
        for _ in range(args.runs):
            cpu, n = await drive(floor_app, args.path, body, args.requests, args.concurrency)
            floor.append(cpu / n * 1e6)
            cpu, n = await drive(app, args.path, body, args.requests, args.concurrency)
            ours.append(cpu / n * 1e6)
            if args.no_warm:
                break
        if args.profile:
            import cProfile

            prof = cProfile.Profile(time.process_time)
            prof.enable()
            await drive(app, args.path, body, args.requests, args.concurrency)
            prof.disable()
            prof.dump_stats(args.profile)
    print(f"{args.path} c{args.concurrency}: tabserve {statistics.median(ours):.1f} µs CPU/request "
          f"[{min(ours):.1f}-{max(ours):.1f}], in-process asgi floor {statistics.median(floor):.1f} µs "
          f"(runs of {args.requests}, load average {os.getloadavg()[0]:.1f})", file=out)


if __name__ == "__main__":
    try:
        import uvloop  # what uvicorn's loop="auto" picks when installed

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
