"""CPU cost of one request inside tabserve's ASGI app, without the network: the part of a request that is ours.

usage: python benchmarks/hotpath_cost.py [BUNDLE] [--requests 20000] [--concurrency 32] [--profile OUT.prof]
  [--path /api/v1/predict] [--body '{"data": [...]}'] [--http]

The app is built as ``tabserve serve`` builds it (access log, metrics and range warnings on, as the peers
harness runs it), its lifespan started, then ``--concurrency`` tasks each send ASGI requests in a loop
through fake ``receive``/``send`` callables. Printed: process CPU µs per request (median of 5 runs), and, for
calibration, the same for a bare ASGI app that parses the JSON and answers a constant (the peers harness's
asgi-floor, in process). What uvicorn itself costs (HTTP parsing, the socket) comes on top of both, equally.
With ``--http``, each request goes in as HTTP/1.1 bytes through the connection protocol ``tabserve serve``
runs (api/transport.py: uvicorn's httptools protocol, and the wire lane of api/wire.py), over fake sockets;
the floor is the same bare app behind uvicorn's own protocol, so both include uvicorn's HTTP parsing and its
per-request machinery where it runs, and neither the kernel's socket work. The driver's own work (writing
requests, spotting answers) is in both figures alike.
The access log goes to /dev/null (the harness sends it to a file).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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


class FakeTransport:
    """Just enough of an asyncio transport for uvicorn's protocol; ``answered`` is resolved by each whole
    answer (a write that is not a bare head: every answer here has a body)."""

    def __init__(self) -> None:
        self.answered: asyncio.Future | None = None
        self.statuses: dict[int, int] = {}
        self.closing = False

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 "):
            status = int(data[9:12])
            self.statuses[status] = self.statuses.get(status, 0) + 1
        if not data.endswith(b"\r\n\r\n") and self.answered is not None:
            self.answered.set_result(None)

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return False

    def set_write_buffer_limits(self, *args, **kwargs) -> None: ...


async def drive_http(app, protocol_class, path: str, body: bytes, requests: int, concurrency: int) -> tuple[float, int]:
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app, proxy_headers=False, ws="none", lifespan="off", log_level="warning",
                            access_log=False)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    request = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    transports = []

    async def worker(n: int) -> None:
        protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
        transport = FakeTransport()
        transports.append(transport)
        protocol.connection_made(transport)
        for _ in range(n):
            transport.answered = loop.create_future()
            protocol.data_received(request)
            await transport.answered
            await asyncio.sleep(0)
        protocol.connection_lost(None)

    per = requests // concurrency
    c0 = time.process_time()
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    cpu = time.process_time() - c0
    statuses: dict[int, int] = {}
    for t in transports:
        for k, v in t.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
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
    parser.add_argument("--http", action="store_true", help="through the HTTP connection protocols (see above)")
    parser.add_argument("--only", choices=("tabserve", "floor"), help="drive only this app (for valgrind counts)")
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
    elif os.environ.get("HOTPATH_GC", "").startswith("threshold="):  # e.g. threshold=10000,10,10
        import gc

        gc.set_threshold(*(int(v) for v in os.environ["HOTPATH_GC"].split("=")[1].split(",")))
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
        if args.http:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            from tabserve.api.transport import protocol_class

            ours_drive = functools.partial(drive_http, app, protocol_class())
            floor_drive = functools.partial(drive_http, floor_app, HttpToolsProtocol)
        else:
            ours_drive = functools.partial(drive, app)
            floor_drive = functools.partial(drive, floor_app)
        if not args.no_warm:
            await ours_drive(args.path, body, 2000, args.concurrency)  # warm
        ours, floor = [], []
        for _ in range(args.runs):
            if args.only != "tabserve":
                cpu, n = await floor_drive(args.path, body, args.requests, args.concurrency)
                floor.append(cpu / n * 1e6)
            if args.only != "floor":
                cpu, n = await ours_drive(args.path, body, args.requests, args.concurrency)
                ours.append(cpu / n * 1e6)
            if args.no_warm:
                break
        if args.profile:
            import cProfile

            prof = cProfile.Profile(time.process_time)
            prof.enable()
            await ours_drive(args.path, body, args.requests, args.concurrency)
            prof.disable()
            prof.dump_stats(args.profile)
    ours, floor = ours or [0.0], floor or [0.0]
    print(f"{args.path} c{args.concurrency}{' over HTTP' if args.http else ''}: tabserve {statistics.median(ours):.1f} µs CPU/request "
          f"[{min(ours):.1f}-{max(ours):.1f}], in-process asgi floor {statistics.median(floor):.1f} µs "
          f"(runs of {args.requests}, load average {os.getloadavg()[0]:.1f})", file=out)


if __name__ == "__main__":
    try:
        import uvloop  # what uvicorn's loop="auto" picks when installed

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
