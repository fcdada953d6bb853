"""gRPC against REST on one server, in one run (issue #18): one-row c32, and 1000-row raw contents against
in-process onnxruntime.

usage: python benchmarks/grpc_bench.py [--duration 8] [--rounds 2]
  (the bundle and rows of benchmarks/peers: $PEERS/tabserve/bundle and $PEERS/model/rows1000.csv, made by
  benchmarks/peers/setup.sh; the server runs from benchmarks/peers/tabserve-grpc/start.sh with TABSERVE_VENV,
  default this checkout's .venv, which needs the [grpc] extra)

Per round: REST v1 one-row c32 driven by wrk (C), gRPC one-row c32 driven by a grpc.aio client process with
32 calls in flight (pre-serialized request bytes), then 1000-row ModelInfer with raw_input_contents at c1 and
c4, and the floor of the gRPC transport itself (tabserve/grpc/http2.py on uvloop answering constant bytes). Each load
reports requests (rows) per second and per CPU-second of the server process: the client kinds differ (wrk
is lighter than any Python client), and on a shared machine the server's own CPU time is the fair measure
of what a request costs it. The in-process figure is onnxruntime's ``run`` on the same 1000 rows
with tabserve's graph, one thread (benchmarks/peers/inproc.py's method).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
SERVICE = "/inference.GRPCInferenceService/ModelInfer"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def infer_bytes(model: str, input_name: str, rows: np.ndarray) -> bytes:
    from tabserve.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    return request.SerializeToString()


# -- the gRPC client (a process of its own) ------------------------------------------------------------------

async def drive(address: str, body: bytes, concurrency: int, duration: float) -> tuple[int, int]:
    """(answered, failed) calls with ``concurrency`` in flight for ``duration`` seconds."""
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(SERVICE)  # bytes in, bytes out: no client-side protobuf work
        for _ in range(20):
            await call(body)
        answered = failed = 0
        end = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal answered, failed
            while time.perf_counter() < end:
                try:
                    await call(body)
                    answered += 1
                except grpc.RpcError:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered, failed


async def floor_server(port: int) -> None:
    """The gRPC transport's own cost: tabserve's HTTP/2 protocol (tabserve/grpc/http2.py) answering constant
    bytes on uvloop, as under uvicorn (benchmarks/grpc_stacks.py compares it with grpc.aio and others)."""
    import grpc

    from tabserve.grpc.http2 import Http2Server

    async def answer(request: bytes, context: object) -> bytes:
        return b"\n\x02rf"

    server = Http2Server(max_receive=16 << 20)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE.split("/")[1], {"ModelInfer": grpc.unary_unary_rpc_method_handler(answer)}),))
    await server.listen("127.0.0.1", port)
    await asyncio.Event().wait()


def client_main(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()
    answered, failed = asyncio.run(drive(args.address, body, args.concurrency, args.duration))
    print(answered, failed)


# -- loads ----------------------------------------------------------------------------------------------------

def grpc_load(address: str, body_file: str, concurrency: int, duration: float, pid: int) -> dict[str, float]:
    cpu = cpu_seconds(pid)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--client", address, "--body", body_file, "--concurrency",
                          str(concurrency), "--duration", str(duration)], capture_output=True, text=True,
                         check=True)
    wall = time.perf_counter() - t0
    answered, failed = map(int, out.stdout.split())
    used = cpu_seconds(pid) - cpu
    rate = answered / duration
    return {"rps": rate, "per_cpu_s": answered / used if used else 0.0, "failed": failed, "wall": wall}


def wrk_load(url: str, lua: str, concurrency: int, duration: float, pid: int) -> dict[str, float]:
    cpu = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "-s", lua, url],
                         capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - cpu
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "per_cpu_s": total / used if used else 0.0, "failed": int(errors.group(1)) if errors else 0}


def inproc_rows_per_s(bundle: Path, rows: np.ndarray) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = rows.astype(np.float64)
    for _ in range(5):
        session.run(None, {name: x})
    times = []
    for _ in range(200):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return len(rows) / statistics.median(times)


def start_server(bundle: Path, venv: Path, logs: Path) -> tuple[subprocess.Popen, int, int]:
    import httpx

    port, grpc_port = free_port(), free_port()
    log = open(logs, "w")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(["bash", str(HERE / "peers" / "tabserve-grpc" / "start.sh"), str(grpc_port), str(port)],
                            env={**os.environ, "TABSERVE_VENV": str(venv), "TABSERVE_BUNDLE": str(bundle),
                                 "PEERS": str(PEERS)}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port, grpc_port
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start; see {logs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bundle", type=Path, default=PEERS / "tabserve" / "bundle")
    parser.add_argument("--rows", type=Path, default=PEERS / "model" / "rows1000.csv")
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("TABSERVE_VENV", REPO / ".venv")))
    parser.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        import uvloop

        uvloop.run(floor_server(args.floor))
        return
    if args.client:
        args.address = args.client
        client_main(args)
        return
    import json

    manifest = json.loads((args.bundle / "tabserve.json").read_text())
    model, input_name = manifest["name"], manifest["input"]["name"]
    rows = np.loadtxt(args.rows, delimiter=",", dtype=np.float64)
    work = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    one, many = work / "one.bin", work / "many.bin"
    one.write_bytes(infer_bytes(model, input_name, rows[:1]))
    many.write_bytes(infer_bytes(model, input_name, rows))
    lua = work / "v1.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f'wrk.body = \'{{"data": [{", ".join(repr(float(v)) for v in rows[0])}]}}\'\n')
    inproc = inproc_rows_per_s(args.bundle, rows)
    print(f"in-process onnxruntime, 1000 rows, 1 thread: {inproc:,.0f} rows/s", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        proc, port, grpc_port = start_server(args.bundle, args.venv, work / f"server-{r}.log")
        address = f"127.0.0.1:{grpc_port}"
        try:
            loads = [("REST v1 1-row c32 (wrk)", None, 32), ("gRPC 1-row c32", one, 32), ("gRPC 1-row c1", one, 1),
                     ("gRPC 1000-row raw c1", many, 1), ("gRPC 1000-row raw c4", many, 4)]
            for name, body, concurrency in loads:
                if body is None:
                    result = wrk_load(f"http://127.0.0.1:{port}/api/v1/predict", str(lua), concurrency,
                                      args.duration, proc.pid)
                else:
                    result = grpc_load(address, str(body), concurrency, args.duration, proc.pid)
                results.setdefault(name, []).append(result)
                print(f"round {r + 1} {name}: {result['rps']:,.0f} req/s, {result['per_cpu_s']:,.0f} per server "
                      f"CPU-s, {result['failed']} failed", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        floor_port = free_port()
        floor = subprocess.Popen([sys.executable, __file__, "--floor", str(floor_port)])
        try:
            time.sleep(1.0)
            result = grpc_load(f"127.0.0.1:{floor_port}", str(one), 32, args.duration, floor.pid)
            results.setdefault("gRPC transport floor (constant answer) c32", []).append(result)
            print(f"round {r + 1} gRPC transport floor c32: {result['rps']:,.0f} req/s, {result['per_cpu_s']:,.0f} per "
                  "server CPU-s", flush=True)
        finally:
            floor.terminate()
            floor.wait(timeout=30)
    print(f"\nmedian of {args.rounds} rounds, {args.duration:g} s each ({os.cpu_count()} CPUs, load "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}):")
    print("| load | req/s | per server CPU-s | rows/s | vs in-process onnxruntime |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        per_cpu = statistics.median(r["per_cpu_s"] for r in runs)
        n = 1000 if "1000-row" in name else 1
        ratio = f"{rps * n / inproc:.2f}x" if n == 1000 else ""
        print(f"| {name} | {rps:,.0f} | {per_cpu:,.0f} | {rps * n:,.0f} | {ratio} |")
    rest, grpc_ = (statistics.median(r["rps"] for r in results[k]) for k in
                   ("REST v1 1-row c32 (wrk)", "gRPC 1-row c32"))
    rest_cpu, grpc_cpu = (statistics.median(r["per_cpu_s"] for r in results[k]) for k in
                          ("REST v1 1-row c32 (wrk)", "gRPC 1-row c32"))
    print(f"\ngRPC / REST v1, one row c32: {grpc_ / rest:.2f}x req/s, {grpc_cpu / rest_cpu:.2f}x per server CPU-s")


if __name__ == "__main__":
    main()
