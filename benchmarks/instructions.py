"""User-space instructions per one-row request, counted by valgrind: a cost measure that a busy machine does not
blur (requests/s and CPU time move with whatever else runs; instruction counts do not).

usage: python benchmarks/instructions.py [--rows tabserve asgi-floor] [--requests 2000 6000] [--pythonpath DIR]

For each row, the server runs under ``valgrind --tool=cachegrind --cache-sim=no`` twice, answering N1 then N2
one-row v1 requests (h2load, HTTP/1.1, 32 connections), then stops; the difference of the two totals over
N2 - N1 is the cost of one request with the start-up taken out (the start-up, N1's total less N1 requests, is
printed too). Kernel time (the sockets) is not counted: it is about the same for every row. The rows are
those of benchmarks/peers (after setup.sh): ``tabserve`` with access log, metrics and range warnings on, and
``asgi-floor``, uvicorn with a bare ASGI app. ``--pythonpath DIR``: run tabserve from another checkout's
``src`` (e.g. a ``git worktree`` of an older commit) to compare. ``--serve-arg ARG`` (repeatable) adds an
argument to ``tabserve serve``, ``--env KEY=VALUE`` (repeatable) sets a variable of the server's environment:
e.g. ``--serve-arg=--payload-log=/tmp/x --env TABSERVE_PAYLOAD_SAMPLE=0`` counts what the payload log costs when
it samples nothing. Needs valgrind and h2load (apt: valgrind, nghttp2-client). Takes ~1 min per row and count.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(row: str, port: int, serve_args: list[str]) -> tuple[list[str], Path]:
    python = sys.executable
    if row == "asgi-floor":
        return ([python, "-m", "uvicorn", "asgi_floor:app", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1", "--http", "httptools", "--loop", "uvloop", "--no-access-log"],
                HERE / "peers" / "apps")
    if row == "tabserve":
        return ([python, "-m", "tabserve", "serve", str(PEERS / "tabserve" / "bundle"), "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "1", *serve_args], Path.cwd())
    raise SystemExit(f"unknown row {row!r}: asgi-floor or tabserve")


def count(row: str, requests: int, body: Path, args: argparse.Namespace) -> int:
    port = free_port()
    cmd, cwd = command(row, port, args.serve_arg)
    env = {**os.environ, "TABSERVE_ACCESS_LOG": "true", "TABSERVE_METRICS": "true",
           "TABSERVE_RANGE_POLICY": "warn", "TABSERVE_LOG_LEVEL": "info",
           **dict(pair.split("=", 1) for pair in args.env)}
    pythonpath = args.pythonpath
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        log = Path(tmp) / "valgrind.log"
        with log.open("w") as log_file:
            proc = subprocess.Popen(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                     f"--cachegrind-out-file={out}", *cmd], cwd=cwd, env=env,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}/api/v1/predict"
        try:
            deadline = time.monotonic() + 600  # valgrind runs the start-up ~30x slower
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{row} did not start:\n{log.read_text()[-2000:]}")
                try:
                    if httpx.post(url, content=body.read_bytes(), timeout=30,
                                  headers={"content-type": "application/json"}).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            load = subprocess.run(["h2load", "--h1", "-n", str(requests), "-c", "32", "-d", str(body),
                                   "-H", "content-type: application/json", url],
                                  capture_output=True, text=True, check=True).stdout
            if f"{requests} succeeded" not in load:
                raise SystemExit(f"not every request succeeded:\n{load}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=600)
        found = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
        if found is None:
            raise SystemExit(f"no instruction count in valgrind's log:\n{log.read_text()[-2000:]}")
        return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["tabserve", "asgi-floor"])
    parser.add_argument("--requests", nargs=2, type=int, default=[2000, 6000], metavar=("N1", "N2"))
    parser.add_argument("--pythonpath", help="tabserve's src from another checkout")
    parser.add_argument("--serve-arg", action="append", default=[], help="one more `tabserve serve` argument")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for the server")
    args = parser.parse_args()
    for tool in ("valgrind", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install valgrind nghttp2-client)")
    first = (PEERS / "model" / "rows1000.csv").read_text().splitlines()[0]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write('{"data":[' + first + "]}")
    body = Path(f.name)
    n1, n2 = args.requests
    for row in args.rows:
        small, large = count(row, n1, body, args), count(row, n2, body, args)
        per = (large - small) / (n2 - n1)
        print(f"{row}: {per / 1000:.0f}k instructions per one-row request (c32), start-up and first answer "
              f"{(small - n1 * per) / 1e9:.2f}G" + (f" [PYTHONPATH={args.pythonpath}]" if args.pythonpath else "")
              + "".join(f" {a}" for a in args.serve_arg + args.env))
    body.unlink()


if __name__ == "__main__":
    main()
