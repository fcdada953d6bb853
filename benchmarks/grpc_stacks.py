"""Which Python gRPC server stack answers a unary ModelInfer cheapest (issue #18 item 4): each stack as a bare
server answering a constant ``ModelInferResponse``, then tabserve itself (REST v1 and gRPC ModelInfer).

usage: python benchmarks/grpc_stacks.py [--duration 5] [--rounds 1] [--stacks aio-uvloop,sync-8,...]
                                       [--baseline-src DIR]
  (the tabserve rows need the bundle of benchmarks/peers: $PEERS/tabserve/bundle, made by
  benchmarks/peers/setup.sh; without it they are skipped. Stacks whose package is missing are skipped.)

The tabserve rows are one server (benchmarks/peers/tabserve-grpc/start.sh) answering REST v1, REST v2 JSON and
gRPC ModelInfer with the same row. Every row is one server process on 127.0.0.1 driven by h2load (C, nghttp2-client) with 32 connections and one
call in flight on each (as the harness's c32 rows), the same one-row request bytes for every gRPC stack. It
prints requests per second and the server's CPU time per call (process CPU seconds, all its threads, divided
by calls answered): on a shared machine CPU per call is the figure to compare; req/s follows the load. The
load average is read at the end of each row.

Stacks (bare: constant answer, request bytes ignored unless said):
  aio-asyncio    grpc.aio on asyncio's default loop, generic handler on raw bytes (identity (de)serializers)
  aio-uvloop     the same on uvloop (what tabserve runs under uvicorn)
  aio-proto      aio-uvloop, the request parsed to ModelInferRequest and the response serialized (upb)
  aio-tuned      aio-uvloop with the options that could matter (no SO_REUSEPORT, no BDP probe, 1000 streams)
  aio-poll       aio-uvloop with GRPC_POLL_STRATEGY=poll
  aio-noexp      aio-uvloop with GRPC_EXPERIMENTS=-event_engine_listener,-event_engine_client (old iomgr)
  sync-N         grpc.server(ThreadPoolExecutor(N)) answering in its own threads
  sync-loop      grpc.server(ThreadPoolExecutor(8)) handing each call to a uvloop loop in the main thread
                 (asyncio.run_coroutine_threadsafe), the way it would reach tabserve's data plane
  grpclib        grpclib (pure Python over the h2 package) on uvloop
  native         tabserve's own gRPC over HTTP/2 on uvloop (src/tabserve/grpc/http2.py), raw bytes
  native-proto   the same, the request parsed and the response serialized with protobuf (upb)
  rest-floor     uvicorn (httptools, uvloop) with a raw ASGI app answering constant JSON: HTTP/1.1's floor
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
SERVICE = "inference.GRPCInferenceService"
METHOD = f"/{SERVICE}/ModelInfer"
ROW = [-0.923, 0.178, 0.174, -0.130, 0.863, -0.261, -0.267, 0.505]  # one row of the harness's 8 features
JSON_ROW = '{"data": [' + ", ".join(map(str, ROW)) + "]}"

STACKS = ["aio-asyncio", "aio-uvloop", "aio-proto", "aio-tuned", "aio-poll", "aio-noexp", "sync-4", "sync-16",
          "sync-loop", "grpclib", "native", "native-proto", "rest-floor"]
ENV = {"aio-poll": {"GRPC_POLL_STRATEGY": "poll"},
       "aio-noexp": {"GRPC_EXPERIMENTS": "-event_engine_listener,-event_engine_client"}}


def request_bytes() -> bytes:
    import numpy as np

    from tabserve.grpc import inference_pb2 as pb

    message = pb.ModelInferRequest(model_name="rf")
    message.inputs.add(name="X", datatype="FP64", shape=[1, len(ROW)])
    message.raw_input_contents.append(np.asarray([ROW], dtype="<f8").tobytes())
    return message.SerializeToString()


def response_message():
    from tabserve.grpc import inference_pb2 as pb

    message = pb.ModelInferResponse(model_name="rf", model_version="1", id="")
    message.outputs.add(name="prediction", datatype="FP64", shape=[1])
    message.raw_output_contents.append(struct.pack("<d", 1.25))
    return message


# -- the bare servers (each in a process of its own) ----------------------------------------------------------

async def serve_aio(port: int, *, proto: bool = False, options: list | None = None) -> None:
    import grpc

    from tabserve.grpc import inference_pb2 as pb

    answer = response_message() if proto else response_message().SerializeToString()

    async def infer(request: object, context: object) -> object:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        infer, request_deserializer=pb.ModelInferRequest.FromString if proto else None,
        response_serializer=pb.ModelInferResponse.SerializeToString if proto else None)
    server = grpc.aio.server(options=options or [])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_sync(port: int, workers: int, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    answer = response_message().SerializeToString()

    async def on_loop(request: bytes) -> bytes:
        return answer

    def infer(request: bytes, context: object) -> bytes:
        if loop is None:
            return answer
        return asyncio.run_coroutine_threadsafe(on_loop(request), loop).result()

    handler = grpc.unary_unary_rpc_method_handler(infer)
    server = grpc.server(ThreadPoolExecutor(workers), maximum_concurrent_rpcs=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    if loop is None:
        server.wait_for_termination()
    else:
        loop.run_forever()


async def serve_native(port: int, *, proto: bool = False) -> None:
    """tabserve's own gRPC-over-HTTP/2 protocol (src/tabserve/grpc/http2.py) with grpcio's handler types."""
    import grpc

    from tabserve.grpc import inference_pb2 as pb
    from tabserve.grpc.http2 import Http2Server

    answer = response_message() if proto else response_message().SerializeToString()

    async def infer(request: object, context: object) -> object:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        infer, request_deserializer=pb.ModelInferRequest.FromString if proto else None,
        response_serializer=pb.ModelInferResponse.SerializeToString if proto else None)
    server = Http2Server(max_receive=16 << 20)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),))
    await server.listen("127.0.0.1", port)
    await asyncio.Event().wait()


async def serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    from tabserve.grpc import inference_pb2 as pb

    answer = response_message()

    class Inference:
        async def infer(self, stream) -> None:
            await stream.recv_message()
            await stream.send_message(answer)

        def __mapping__(self) -> dict:
            return {METHOD: Handler(self.infer, Cardinality.UNARY_UNARY, pb.ModelInferRequest,
                                    pb.ModelInferResponse)}

    server = Server([Inference()])
    await server.start("127.0.0.1", port)
    await server.wait_closed()


def serve_rest_floor(port: int) -> None:
    import uvicorn

    body = b'{"prediction":1.25}'

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"19")]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="off")


def serve(stack: str, port: int) -> None:
    import uvloop

    if stack == "aio-asyncio":
        asyncio.run(serve_aio(port))
    elif stack in ("aio-uvloop", "aio-poll", "aio-noexp"):
        uvloop.run(serve_aio(port))
    elif stack == "aio-proto":
        uvloop.run(serve_aio(port, proto=True))
    elif stack == "aio-tuned":
        uvloop.run(serve_aio(port, options=[("grpc.so_reuseport", 0), ("grpc.http2.bdp_probe", 0),
                                            ("grpc.max_concurrent_streams", 1000)]))
    elif stack.startswith("sync-") and stack[5:].isdigit():
        serve_sync(port, int(stack[5:]))
    elif stack == "sync-loop":
        serve_sync(port, 8, loop=uvloop.new_event_loop())
    elif stack == "grpclib":
        uvloop.run(serve_grpclib(port))
    elif stack in ("native", "native-proto"):
        uvloop.run(serve_native(port, proto=stack == "native-proto"))
    elif stack == "rest-floor":
        serve_rest_floor(port)
    else:
        raise SystemExit(f"unknown stack {stack!r}")


def available(stack: str) -> str | None:
    """Why ``stack`` cannot run here, or None."""
    module = {"grpclib": "grpclib", "rest-floor": "uvicorn", "native": "hpack", "native-proto": "hpack"}.get(stack, "grpc")
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed"
    return None


# -- measuring ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout:g} s")


def h2load(url: str, body: Path, headers: list[str], conns: int, secs: float, *, h1: bool = False) -> int:
    """Calls answered by a load of ``secs`` seconds (h2load counts HTTP statuses: a gRPC error is a 200, so the
    callers check one answer before)."""
    args = ["h2load", "-c", str(conns), "-m", "1", "-t", "1", "-D", f"{secs:g}", "-d", str(body)]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args + (["--h1"] if h1 else []) + [url], capture_output=True, text=True,
                         timeout=secs + 60, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if done is None:
        raise SystemExit(f"h2load printed no totals:\n{out}")
    return int(done.group(1))


def grpc_check(port: int, body: bytes) -> None:
    """One call through grpcio's client: the server answers ModelInfer with a ModelInferResponse."""
    import grpc

    from tabserve.grpc import inference_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(METHOD)(body, timeout=30)
    if not pb.ModelInferResponse.FromString(answer).outputs:
        raise SystemExit("the answer has no outputs")


def measure(proc: subprocess.Popen, load, secs: float, warm: float) -> dict[str, float]:
    load(warm)  # connections up, caches warm, any lazy set-up done
    cpu, t0 = cpu_seconds(proc.pid), time.perf_counter()
    calls = load(secs)
    wall, used = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu
    return {"rps": calls / wall, "us_per_call": used / calls * 1e6 if calls else float("nan"),
            "load": float(Path("/proc/loadavg").read_text().split()[0])}


def run_bare(stack: str, work: Path, secs: float, warm: float, conns: int) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, **ENV.get(stack, {})}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", stack, str(port)], env=env)
    try:
        wait_listening(port, proc)
        body = request_bytes()
        url = f"http://127.0.0.1:{port}{METHOD}"
        frame = work / "frame.bin"
        frame.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        if stack == "rest-floor":
            json_body = work / "row.json"
            json_body.write_text(JSON_ROW)
            return measure(proc, lambda s: h2load(f"http://127.0.0.1:{port}/", json_body,
                                                  ["content-type: application/json"], conns, s, h1=True), secs, warm)
        grpc_check(port, body)
        return measure(proc, lambda s: h2load(url, frame, ["content-type: application/grpc", "te: trailers"],
                                              conns, s), secs, warm)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_tabserve(work: Path, secs: float, warm: float, conns: int,
                 source: str | None = None) -> dict[str, dict[str, float]]:
    """tabserve itself (benchmarks/peers/tabserve-grpc/start.sh: access log, metrics, range checks on): REST v1,
    REST v2 and gRPC ModelInfer (raw contents) on one server, one after the other. ``source``: a ``src``
    directory imported instead of the installed tabserve (another revision, for an A/B in one run)."""
    import json

    bundle = PEERS / "tabserve" / "bundle"
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "TABSERVE_VENV": os.environ.get("TABSERVE_VENV", str(REPO / ".venv")),
           "TABSERVE_BUNDLE": str(bundle), "PEERS": str(PEERS)}
    if source:
        env["PYTHONPATH"] = source
    log = open(work / "tabserve.log", "w")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(["bash", str(HERE / "peers" / "tabserve-grpc" / "start.sh"), str(grpc_port),
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, proc)
        wait_listening(grpc_port, proc)
        manifest = json.loads((bundle / "tabserve.json").read_text())
        assert manifest["name"] == "rf" and manifest["input"]["name"] == "X", "the harness bundle is rf(X)"
        body = request_bytes()
        for _ in range(600):  # ready?
            try:
                grpc_check(grpc_port, body)
                break
            except BaseException:  # noqa: BLE001 - UNAVAILABLE while the model loads
                time.sleep(0.1)
        frame = work / "frame.bin"
        frame.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        json_body = work / "row.json"
        json_body.write_text(JSON_ROW)
        rest = measure(proc, lambda s: h2load(f"http://127.0.0.1:{port}/api/v1/predict", json_body,
                                              ["content-type: application/json"], conns, s, h1=True), secs, warm)
        v2_body = work / "v2.json"
        v2_body.write_text(json.dumps({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, len(ROW)],
                                                   "data": ROW}]}))
        rest_v2 = measure(proc, lambda s: h2load(f"http://127.0.0.1:{port}/v2/models/rf/infer", v2_body,
                                                 ["content-type: application/json"], conns, s, h1=True), secs, warm)
        grpc_ = measure(proc, lambda s: h2load(f"http://127.0.0.1:{grpc_port}{METHOD}", frame,
                                               ["content-type: application/grpc", "te: trailers"], conns, s),
                        secs, warm)
        tag = " (baseline)" if source else ""
        return {f"tabserve REST v1{tag}": rest, f"tabserve REST v2 (JSON){tag}": rest_v2,
                f"tabserve gRPC ModelInfer{tag}": grpc_}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per row")
    parser.add_argument("--warm", type=float, default=1.0, help="seconds of load before each row")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stacks", default=",".join(STACKS + ["tabserve"]),
                        help="comma-separated; 'tabserve' is the real server's REST v1 and gRPC rows")
    parser.add_argument("--baseline-src", metavar="DIR",
                        help="also run the tabserve rows with tabserve imported from DIR (e.g. the src/ of "
                             "`git archive` of another commit), alternating with this checkout's each round")
    parser.add_argument("--serve", nargs=2, metavar=("STACK", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="grpc-stacks-") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for stack in args.stacks.split(","):
                if stack == "tabserve":
                    if not (PEERS / "tabserve" / "bundle").is_dir():
                        print(f"tabserve: skipped ({PEERS}/tabserve/bundle is missing: benchmarks/peers/setup.sh)")
                        continue
                    rows = {}
                    if args.baseline_src:
                        rows = run_tabserve(work, args.duration, args.warm, args.connections, args.baseline_src)
                    rows.update(run_tabserve(work, args.duration, args.warm, args.connections))
                else:
                    why = available(stack)
                    if why:
                        print(f"{stack}: skipped ({why})")
                        continue
                    rows = {stack: run_bare(stack, work, args.duration, args.warm, args.connections)}
                for name, row in rows.items():
                    results.setdefault(name, []).append(row)
                    print(f"round {r + 1} {name}: {row['rps']:,.0f} req/s, {row['us_per_call']:.0f} us CPU/call, "
                          f"load {row['load']:.2f}", flush=True)
    import statistics

    import grpc

    print(f"\nc{args.connections}, {args.duration:g} s a row, median of {args.rounds} round(s); grpcio "
          f"{grpc.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("| stack | server CPU us/call | req/s | load avg |")
    print("| --- | --- | --- | --- |")
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(r['us_per_call'] for r in runs):.0f} | "
              f"{statistics.median(r['rps'] for r in runs):,.0f} | "
              f"{statistics.median(r['load'] for r in runs):.2f} |")


if __name__ == "__main__":
    main()
