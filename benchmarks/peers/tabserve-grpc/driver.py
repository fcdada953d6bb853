"""The gRPC row's driver (run.py uses it where a row has driver.py instead of request.lua; wrk speaks no gRPC).

usage: python driver.py send PORT NROWS [--wait S]   one ModelInfer; the outputs as JSON on stdout (run.py checks
                                                     them against scikit-learn's); exit 3 while not ready
       python driver.py load PORT CONNS NROWS SECS   h2load (C, nghttp2-client) with CONNS connections, one call in
                                                     flight on each, as wrk does; prints bench.lua's SUMMARY line

The request: model ``rf``, input ``X`` [NROWS, 8] FP64 in raw_input_contents (what tritonclient sends), rows from
BENCH_ROWS. h2load sends the pre-serialized gRPC frame (the 5-byte prefix and the message) as each request's body.
It sees HTTP statuses only, and gRPC answers an error with HTTP 200 and no message: a call counts as answered
when its bytes add up, so ``non2xx`` is the calls that got fewer DATA bytes than a correct answer has.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from tabserve.grpc import inference_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"
NOT_READY = 3


def request(nrows: int) -> bytes:
    rows = np.loadtxt(os.environ["BENCH_ROWS"], delimiter=",", dtype="<f8", ndmin=2)[:nrows]
    message = pb.ModelInferRequest(model_name="rf")
    message.inputs.add(name="X", datatype="FP64", shape=list(rows.shape))
    message.raw_input_contents.append(np.ascontiguousarray(rows).tobytes())
    return message.SerializeToString()


def call(port: int, body: bytes, wait: float) -> bytes:
    """The serialized answer; waits up to ``wait`` s while the server is not listening or not ready."""
    deadline = time.monotonic() + wait
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(METHOD)  # bytes in, bytes out
        while True:
            try:
                return infer(body, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise SystemExit(f"{exc.code().name}: {exc.details()}") from None
                if time.monotonic() > deadline:
                    print(f"UNAVAILABLE: {exc.details()}", file=sys.stderr)
                    raise SystemExit(NOT_READY) from None
                time.sleep(0.02)


def send(port: int, nrows: int, wait: float) -> None:
    answer = pb.ModelInferResponse.FromString(call(port, request(nrows), wait))
    outputs = {}
    for i, out in enumerate(answer.outputs):
        raw = answer.raw_output_contents[i] if answer.raw_output_contents else None
        if raw is not None and out.datatype in ("FP64", "FP32", "INT64", "INT32"):
            dtype = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[out.datatype]
            outputs[out.name] = np.frombuffer(raw, dtype=dtype).tolist()
        else:
            outputs[out.name] = out.datatype
    print(json.dumps({"model_name": answer.model_name, "model_version": answer.model_version, "outputs": outputs}))


def load(port: int, conns: int, nrows: int, secs: float) -> None:
    h2load = shutil.which("h2load")
    if h2load is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    body = request(nrows)
    answer_bytes = 5 + len(call(port, body, 10))  # the gRPC frame of a correct answer
    with tempfile.TemporaryDirectory(prefix="grpc-driver-") as work:
        frame, log = Path(work, "frame.bin"), Path(work, "requests.log")
        frame.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        done = subprocess.run([h2load, "-c", str(conns), "-m", "1", "-t", "1", "-D", f"{secs:g}", "-d", str(frame),
                               "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log),
                               f"http://127.0.0.1:{port}{METHOD}"],
                              capture_output=True, text=True, timeout=secs + 60, check=False)
        print(done.stdout, done.stderr, file=sys.stderr)  # run.py keeps it in the row's log
        if done.returncode != 0:
            raise SystemExit(f"h2load exited {done.returncode}")
        # start (µs since the epoch), HTTP status, duration (µs): one line per finished request
        lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    starts = [int(s) for s, _, _ in lines]
    latencies = sorted(int(d) for _, _, d in lines)
    statuses = [int(st) for _, st, _ in lines]
    traffic = next(x for x in done.stdout.splitlines() if x.startswith("traffic:"))
    data = int(traffic.split(" data")[0].rsplit("(", 1)[1].rstrip(")"))  # "... 125.60KB (128610) data"
    requests = len(lines)
    short = max(0, requests - data // answer_bytes)  # calls whose answer was not a whole message
    duration_us = (max(s + d for s, d in zip(starts, (int(d) for _, _, d in lines), strict=True)) - min(starts)
                   if lines else int(secs * 1e6))

    def pct(p: float) -> int:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else 0

    errors = next(x for x in done.stdout.splitlines() if x.startswith("requests:"))
    failed = sum(int(errors.split(f" {kind}")[0].rsplit(" ", 1)[1]) for kind in ("failed", "errored", "timeout"))
    print("SUMMARY " + json.dumps({
        "requests": requests, "duration_us": duration_us,
        "non2xx": sum(1 for st in statuses if not 200 <= st < 300) + short,
        "err_connect": 0, "err_read": failed, "err_write": 0, "err_timeout": 0,
        "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "max_us": latencies[-1] if latencies else 0,
        "mean_us": statistics.fmean(latencies) if latencies else 0.0}))


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["send"]:
        wait = float(args[args.index("--wait") + 1]) if "--wait" in args else 0.0
        send(int(args[1]), int(args[2]), wait)
    elif args[:1] == ["load"]:
        load(int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
