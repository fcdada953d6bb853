"""tabserve's side-by-side HTTP benchmark: each row is a server of the same model, measured the same way.

usage: python benchmarks/peers/run.py [--rounds 2 --duration 10 ...] [ROW ...]   (after setup.sh)

A row is a folder here with start.sh (`bash start.sh PORT`: the server in the foreground on 127.0.0.1:PORT,
one worker) and request.lua (the request for NROWS rows, see lua/common.lua); optional version.sh (one line
for the version column) and NOVERIFY (constant answers: no correctness check). A row that wrk cannot drive
(tabserve-grpc) has driver.py instead of request.lua: `driver.py send PORT NROWS --wait S` answers one request
(JSON on stdout, exit 3 while not ready) and `driver.py load PORT CONNS NROWS SECS` runs the load in its own
client and prints bench.lua's SUMMARY line; its start.sh gets a spare second port (`start.sh PORT SPARE`). For each round, for each row
(interleaved: A B C, A B C, so slow drifts of a shared machine spread over every row):
  start the server pinned to --server-cpu with taskset, send the 1-row request until a correct answer comes
  back (the cold start), check the 1000-row answer too, then run wrk pinned to --wrk-cpu: a c1 warm-up,
  c1 and c32 with 1-row requests, RSS of the process tree, a c4 load of 1000-row requests; stop the tree.
The in-process onnxruntime timing (inproc.py) runs once per round on the server CPU. The table (median
[min-max] over rounds) and the ratios behind issue #17's targets go to stdout and OUT/table.md; every
measurement, with wrk's raw numbers, to OUT/results.jsonl; each server's log and wrk's output to OUT/logs/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from proctree import cpu_seconds, status_field, still_alive, stop, tree
from report import inproc_lines, profile_summary, ratios, table
from verify import check

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_ROWS = ["asgi-floor", "fastapi-floor", "fastapi-onnx", "tabserve", "tabserve-v2", "tabserve-v2-binary"]


def log(*parts: object) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}]", *parts, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ----------------------------------------------------------------------------- processes (from /proc)


def per_cpu(load: dict, pids: dict[int, int], before: float, rows: int) -> None:
    """Add the server's CPU time during a load, and the 2xx rows it answered per CPU-second. A server that
    shares its core with other work answers fewer requests per second, but not many fewer per CPU-second:
    on a busy machine this is the steadier way to compare rows (wrk's own CPU is not in it)."""
    load["server_cpu_s"] = cpu_seconds(pids) - before
    ok = load["requests"] - load["non2xx"]
    load["per_cpu_s"] = ok * rows / load["server_cpu_s"] if load["server_cpu_s"] > 0 else None


class Row:
    def __init__(self, folder: Path, args: argparse.Namespace):
        self.dir, self.name, self.args = folder, folder.name, args
        self.floor = (folder / "NOVERIFY").exists()
        self.driver = folder / "driver.py" if (folder / "driver.py").exists() else None
        self.version = "?"
        self.requests: dict[int, tuple[str, str, dict[str, str], bytes]] = {}

    def env(self, run_dir: str, rows: int = 1) -> dict[str, str]:
        return {**os.environ, "PEERS": str(self.args.peers), "MODEL_DIR": str(self.args.model_dir),
                "BENCH_HERE": str(HERE), "RUN_DIR": run_dir, "PEERS_PYTHON": self.args.python,
                "BENCH_LUA_DIR": str(HERE / "lua"), "BENCH_REQUEST_LUA": str(self.dir / "request.lua"),
                "BENCH_ROWS": str(self.args.model_dir / f"rows{rows}.csv"), "PYTHONDONTWRITEBYTECODE": "1"}

    def prepare(self) -> None:
        """The version line, and the exact requests wrk will send (rendered by luajit) for the checks."""
        if (self.dir / "version.sh").exists():
            r = subprocess.run(["bash", str(self.dir / "version.sh")], capture_output=True, text=True,
                               env=self.env("/tmp"), timeout=60, check=False)
            self.version = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else (
                "version.sh failed")
        if self.driver is not None:
            return
        for n in (1, 1000):
            with tempfile.TemporaryDirectory(prefix="bench-request-") as d:
                subprocess.run(["luajit", str(HERE / "lua" / "dump.lua"), d], check=True, env=self.env(d, n))
                part = lambda name: (Path(d) / name).read_bytes()
                headers = dict(line.split(": ", 1) for line in part("headers").decode().splitlines() if ": " in line)
                self.requests[n] = (part("method").decode(), part("path").decode(), headers, part("body"))

    def send(self, port: int, n: int, timeout: float = 30) -> tuple[int, bytes]:
        if self.driver is not None:  # exit 3: not listening or not ready yet, as a 503 would say
            r = subprocess.run([self.args.python, str(self.driver), "send", str(port), str(n), "--wait", str(timeout)],
                               capture_output=True, env=self.env("/tmp", n), timeout=timeout + 60, check=False)
            return (200, r.stdout) if r.returncode == 0 else (503 if r.returncode == 3 else 500, r.stderr)
        method, path, headers, body = self.requests[n]
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def wrk(args: argparse.Namespace, row: Row, port: int, run_dir: str, conns: int, rows: int, secs: float,
        tag: str, logf) -> dict:
    if row.driver is not None:
        cmd = ["taskset", "-c", args.wrk_cpu, args.python, str(row.driver), "load", str(port), str(conns), str(rows),
               str(secs)]
    else:
        cmd = ["taskset", "-c", args.wrk_cpu, "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout",
               "10s", "-s", str(HERE / "lua" / "bench.lua"), f"http://127.0.0.1:{port}/"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=row.env(run_dir, rows), timeout=secs + 60,
                       check=False)
    logf.write(f"\n===== wrk {tag}: {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    logf.flush()
    line = next((x for x in r.stdout.splitlines() if x.startswith("SUMMARY ")), None)
    if line is None:
        raise RuntimeError(f"wrk {tag} printed no summary (exit {r.returncode}): {r.stderr[-300:]}")
    s = json.loads(line.removeprefix("SUMMARY "))
    seconds = s["duration_us"] / 1e6
    ok = s["requests"] - s["non2xx"]
    s.update(rps=s["requests"] / seconds, ok_rps=ok / seconds, rows_per_s=ok * rows / seconds,
             p50_ms=s["p50_us"] / 1e3, p99_ms=s["p99_us"] / 1e3,
             sock_err=s["err_connect"] + s["err_read"] + s["err_write"] + s["err_timeout"])
    return s


def measure(args: argparse.Namespace, row: Row, rnd: int) -> dict:
    result: dict = {"row": row.name, "version": row.version, "round": rnd, "ok": False, "loadavg": loadavg()}
    port = free_port()
    run_dir = tempfile.mkdtemp(prefix=f"bench-{row.name}-r{rnd}-")
    log_path = args.out / "logs" / f"{row.name}-r{rnd}.log"
    expected = {n: json.loads((args.model_dir / f"expected{n}.json").read_text()) for n in (1, 1000)}
    logf = log_path.open("w")
    log(f"round {rnd} {row.name}: start on :{port}")
    started = time.monotonic()
    spare = [str(free_port())] if row.driver is not None else []
    proc = subprocess.Popen(["taskset", "-c", args.server_cpu, "bash", str(row.dir / "start.sh"), str(port), *spare],
                            cwd=row.dir, env=row.env(run_dir), stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pids: dict[int, int] = {}
    try:
        last = "no answer"
        while True:  # cold start: launch -> first correct answer (any 2xx for a floor)
            pids.update(tree(proc.pid))
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode} before answering (see {log_path})")
            if time.monotonic() - started > args.start_timeout:
                raise RuntimeError(f"no correct answer after {args.start_timeout:.0f} s: {last}")
            try:
                status, body = row.send(port, 1, timeout=5)
            except OSError as e:  # not listening yet
                last = repr(e)[:200]
                time.sleep(0.02)
                continue
            good, why = check(body, expected[1]) if 200 <= status < 300 else (False, f"HTTP {status}")
            if good or (row.floor and 200 <= status < 300):
                break
            last = f"{why}: {body[:200]!r}"
            if status not in (502, 503, 504):  # only "not ready yet" is worth waiting for
                raise RuntimeError(f"wrong answer for 1 row: {last}")
            time.sleep(0.02)
        result["start_s"] = time.monotonic() - started
        result["sample_response"] = body[:300].decode(errors="replace")
        for n in (1, 1000):
            status, body = row.send(port, n)
            good, why = check(body, expected[n]) if status == 200 else (False, f"HTTP {status}: {body[:200]!r}")
            result[f"verify{n}"] = "skipped (constant answers)" if row.floor else ("ok, " if good else "WRONG, ") + why
            if not good and not row.floor:
                raise RuntimeError(f"wrong answer for {n} rows: {why}")
        log(f"  answered correctly after {result['start_s']:.2f} s; {result['verify1000']}")
        if args.warmup > 0:
            wrk(args, row, port, run_dir, 1, 1, args.warmup, "warm-up", logf)
        result["c1"] = wrk(args, row, port, run_dir, 1, 1, args.duration, "c1", logf)
        spy = start_profile(args, row, proc.pid, rnd)
        pids.update(tree(proc.pid))
        cpu = cpu_seconds(pids)
        result["c32"] = wrk(args, row, port, run_dir, args.conns, 1, args.duration, f"c{args.conns}", logf)
        per_cpu(result["c32"], pids, cpu, 1)
        if spy is not None:
            spy.wait(timeout=60)
            result["profiled"] = True
        pids.update(tree(proc.pid))
        result["rss_mb"] = sum(int(kb) for kb in status_field(pids, "VmRSS")) / 1024
        result["nprocs"] = len(still_alive(pids))
        result["cpus_allowed"] = sorted(set(status_field(pids, "Cpus_allowed_list")))
        if result["cpus_allowed"] != [args.server_cpu]:
            log(f"  WARNING: not every server process is pinned to CPU {args.server_cpu}: {result['cpus_allowed']}")
        cpu = cpu_seconds(pids)
        result["batch"] = wrk(args, row, port, run_dir, args.batch_conns, 1000, args.duration, "batch", logf)
        per_cpu(result["batch"], pids, cpu, 1000)
        result["non2xx"] = sum(result[k]["non2xx"] for k in ("c1", "c32", "batch"))
        result["sock_err"] = sum(result[k]["sock_err"] for k in ("c1", "c32", "batch"))
        result["ok"] = True
        log(f"  c1 {result['c1']['rps']:.0f} req/s | c{args.conns} {result['c32']['rps']:.0f} req/s | batch "
            f"{result['batch']['rows_per_s']:.0f} rows/s | non-2xx {result['non2xx']} | RSS {result['rss_mb']:.0f} MB")
    except Exception as e:  # noqa: BLE001 -- one failing row must not stop the others: it shows as FAILED in the table
        result["error"] = str(e)
        log(f"  FAILED: {e}")
    finally:
        left = stop(proc, pids)
        if left:
            result["leftover_pids"] = left
            log(f"  WARNING: processes left running: {left}")
        logf.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def start_profile(args: argparse.Namespace, row: Row, pid: int, rnd: int) -> subprocess.Popen | None:
    """py-spy on the server during its c32 load (--profile ROW, first round only), pinned beside wrk."""
    if row.name != args.profile or rnd != 1:
        return None
    spy = shutil.which("py-spy") or str(Path(args.python).parent / "py-spy")
    out = args.out / f"profile-{row.name}.txt"
    return subprocess.Popen(["taskset", "-c", args.wrk_cpu, spy, "record", "--pid", str(pid), "--subprocesses",
                             "--nonblocking", "--rate", "250", "--duration", str(args.duration), "--format", "raw",
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def inproc(args: argparse.Namespace) -> dict | None:
    bundle = args.peers / "tabserve" / "bundle"
    cmd = ["taskset", "-c", args.server_cpu, args.python, str(HERE / "inproc.py"), str(args.model_dir), str(bundle)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        log(f"in-process timing failed: {r.stderr[-500:]}")
        return None
    timing = json.loads(r.stdout)
    log(f"in-process (CPU {args.server_cpu}): {timing}")
    return timing


def source_note() -> str:
    """Which tabserve was measured: the serving install comes from TABSERVE_SRC (default this checkout)."""
    src = os.environ.get("TABSERVE_SRC", str(REPO))
    r = subprocess.run(["git", "-C", src, "describe", "--always", "--dirty"], capture_output=True, text=True,
                       check=False)
    return f"tabserve from {src} at {r.stdout.strip() or '?'} (venv {os.environ.get('TABSERVE_VENV', 'default')})"


def main() -> None:
    peers = Path(os.environ.get("PEERS", "/tmp/peers"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="*", help=f"row folders under benchmarks/peers (default: {' '.join(DEFAULT_ROWS)})")
    ap.add_argument("--row-dir", action="append", type=Path, default=[], help="a row folder anywhere (repeatable)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10, help="seconds per timed load")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of c1 load before the timed loads")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--batch-conns", type=int, default=4)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--wrk-cpu", default="1")
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--peers", type=Path, default=peers, help="where setup.sh put the model, venvs and bundle")
    ap.add_argument("--model-dir", type=Path, default=None, help="default PEERS/model")
    ap.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"),
                    help="the Python of the floor and fastapi rows and of inproc.py (needs fastapi, uvicorn, "
                         "onnxruntime)")
    ap.add_argument("--out", type=Path, default=None, help="default PEERS/results/<timestamp>")
    ap.add_argument("--no-inproc", action="store_true", help="skip the in-process onnxruntime timing")
    ap.add_argument("--profile", metavar="ROW", help="py-spy this row during its first c32 load (its c32 cell then "
                    "includes the sampling cost); the self-time summary goes to the report")
    args = ap.parse_args()
    args.model_dir = args.model_dir or args.peers / "model"
    args.out = args.out or args.peers / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    missing = [tool for tool in ("wrk", "luajit", "taskset") if not shutil.which(tool)]
    if missing or not (args.model_dir / "rows1000.csv").exists():
        sys.exit(f"missing {', '.join(missing) or args.model_dir / 'rows1000.csv'}: run benchmarks/peers/setup.sh")
    rows = [Row(HERE / name, args) for name in (args.rows or DEFAULT_ROWS)] + [Row(d.resolve(), args)
                                                                              for d in args.row_dir]
    for row in rows:
        if not (row.dir / "start.sh").exists() or not ((row.dir / "request.lua").exists() or row.driver):
            sys.exit(f"{row.dir} is not a row: it needs start.sh and request.lua (or driver.py)")
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    for row in rows:
        row.prepare()
        if row.driver is not None:
            log(f"{row.name}: {row.version}; driven by {row.driver.name}")
            continue
        method, path, _, body = row.requests[1]
        log(f"{row.name}: {row.version}; {method} {path}, {len(body)} B / 1000 rows {len(row.requests[1000][3])} B")

    results: list[dict] = []
    inprocs: dict[int, dict] = {}
    with (args.out / "results.jsonl").open("w") as out:
        for rnd in range(1, args.rounds + 1):
            if not args.no_inproc and (timing := inproc(args)):
                inprocs[rnd] = timing
                out.write(json.dumps({"row": "inproc", "round": rnd, "ok": True, **timing}) + "\n")
            for row in rows:
                result = measure(args, row, rnd)
                results.append(result)
                out.write(json.dumps(result) + "\n")
                out.flush()

    text = [f"# tabserve peers benchmark {args.out.name}",
            (f"{os.uname().nodename}, {os.cpu_count()} CPUs; server on CPU {args.server_cpu}, wrk on CPU "
             f"{args.wrk_cpu}; load average {load_before} before, {loadavg()} after; {source_note()}."),
            (f"{args.rounds} interleaved rounds, {args.duration} s per load after a {args.warmup} s c1 warm-up; "
             f"cells: median [min-max] over rounds. c1 / c{args.conns}: wrk -t1 with 1 / {args.conns} "
             f"connections, 1-row requests; batch: 1000-row requests on {args.batch_conns} connections (2xx "
             "only); req/CPU-s, rows/CPU-s: 2xx answers per CPU-second of the server's processes during that "
             "load; non-2xx and socket errors summed over the timed loads; start: launch to the first correct "
             f"answer; RSS: the process tree after the c{args.conns} load."),
            "", table(results, rows, args.conns), ""]
    text += inproc_lines(inprocs)
    if targets := ratios(results, inprocs):
        text += ["", "Issue #17 targets (ratios within each round):", targets]
    if args.profile and (args.out / f"profile-{args.profile}.txt").exists():
        text += ["", f"## py-spy profile of {args.profile}, c{args.conns} load of round 1", "",
                 profile_summary(args.out / f"profile-{args.profile}.txt")]
    report = "\n".join(text) + "\n"
    (args.out / "table.md").write_text(report)
    print("\n" + report)
    log(f"results in {args.out}")


if __name__ == "__main__":
    main()
