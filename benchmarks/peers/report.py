"""The report: the table of medians [min-max] over rounds, issue #17's ratios, a py-spy self-time summary."""

from __future__ import annotations

import statistics
from pathlib import Path

FLOOR, HAND_ROLLED = "asgi-floor", "fastapi-onnx"


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    mid = fmt.format(statistics.median(values))
    return mid if len(values) == 1 else f"{mid} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def table(results: list[dict], rows: list, conns: int) -> str:
    """rows: run.Row objects (name, version, floor), in the order of the table."""
    head = ["row", "version", "c1 req/s", "c1 p50 ms", "c1 p99 ms", f"c{conns} req/s", f"c{conns} p99 ms",
            "batch rows/s", f"c{conns} req/CPU-s", "batch rows/CPU-s", "non-2xx", "sock err", "start s", "RSS MB", "ok rounds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        mine = [r for r in results if r["row"] == row.name]
        ok = [r for r in mine if r["ok"]]
        if not ok:
            why = mine[0].get("error", "?") if mine else "not run"
            cells = [row.name, row.version, f"FAILED: {why[:100]}"] + [""] * (len(head) - 4) + [f"0/{len(mine)}"]
        else:
            def of(f, ok=ok):
                return [f(r) for r in ok]
            cells = [row.name + (" (floor)" if row.floor else ""), row.version,
                     cell(of(lambda r: r["c1"]["rps"]), "{:.0f}"), cell(of(lambda r: r["c1"]["p50_ms"]), "{:.2f}"),
                     cell(of(lambda r: r["c1"]["p99_ms"]), "{:.2f}"), cell(of(lambda r: r["c32"]["rps"]), "{:.0f}"),
                     cell(of(lambda r: r["c32"]["p99_ms"]), "{:.1f}"),
                     cell(of(lambda r: r["batch"]["rows_per_s"]), "{:.0f}"),
                     cell([v for v in of(lambda r: r["c32"]["per_cpu_s"]) if v], "{:.0f}"),
                     cell([v for v in of(lambda r: r["batch"]["per_cpu_s"]) if v], "{:.0f}"),
                     str(sum(r["non2xx"] for r in ok)), str(sum(r["sock_err"] for r in ok)),
                     cell(of(lambda r: r["start_s"]), "{:.2f}"), cell(of(lambda r: r["rss_mb"]), "{:.0f}"),
                     f"{len(ok)}/{len(mine)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inproc_lines(inprocs: dict[int, dict]) -> list[str]:
    """The in-process onnxruntime timings of the rounds, one line per graph and thread setting."""
    text = []
    for key, label in (("float_1thread", "skl2onnx float graph, 1 thread"),
                       ("float_default", "skl2onnx float graph, default options (uses every core)"),
                       ("tabserve_graph_1thread", "tabserve's exact graph, 1 thread")):
        one = [t[key]["row1_us"] for t in inprocs.values() if key in t]
        many = [t[key]["rows1000_us"] / 1e3 for t in inprocs.values() if key in t]
        many_cpu = [t[key]["rows1000_cpu_us"] / 1e3 for t in inprocs.values() if "rows1000_cpu_us" in t.get(key, {})]
        if one:
            text.append(f"In-process onnxruntime, {label}: 1 row {cell(one, '{:.1f}')} µs, 1000 rows "
                        f"{cell(many, '{:.2f}')} ms ({cell([1e6 / m for m in many], '{:.0f}')} rows/s; "
                        f"CPU time {cell(many_cpu, '{:.2f}')} ms).  ")
    return text


def _per_round(by: dict, name: str, value) -> list[float]:
    """value(row's result, round) for every round where it is defined (not None)."""
    found = [value(r, rnd) for (row, rnd), r in by.items() if row == name]
    return [v for v in found if v is not None]


def ratios(results: list[dict], inprocs: dict[int, dict]) -> str:
    """Issue #17's targets for each tabserve row. Each ratio is taken within one round (rows measured minutes
    apart, not runs apart), then the median [min-max] over rounds. A second line gives the same comparisons
    per CPU-second of the server, the steadier view when other work shares the server's core."""
    by = {(r["row"], r["round"]): r for r in results if r["ok"]}

    def floor(rnd: int, key: str, field: str) -> float | None:
        r = by.get((FLOOR, rnd))
        return r[key][field] if r and r[key].get(field) else None

    def inproc_rows_per_s(rnd: int, field: str) -> float | None:
        return 1e9 / inprocs[rnd]["float_1thread"][field] if rnd in inprocs else None

    def fraction(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def shown(values: list[float], unit: str = "×") -> str:
        mid = statistics.median(values)
        return f"{mid:.2f}{unit}" + (f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1 else "")

    lines = []
    for name in sorted({r["row"] for r in results if r["row"].startswith("tabserve")}):
        batch_bound = 1.0 if name.endswith("binary") else 0.95
        checks = [
            ("c1 vs asgi-floor", 0.75, True, lambda r, n: fraction(r["c1"]["ok_rps"], floor(n, "c1", "ok_rps"))),
            ("c32 vs asgi-floor", 0.6, True, lambda r, n: fraction(r["c32"]["ok_rps"], floor(n, "c32", "ok_rps"))),
            ("batch vs in-process ort (1 thread)", batch_bound, True,
             lambda r, n: fraction(r["batch"]["rows_per_s"], inproc_rows_per_s(n, "rows1000_us"))),
            ("cold start", 1.0, False, lambda r, n: r["start_s"]),
            ("RSS vs fastapi-onnx", 1.0, False,
             lambda r, n: fraction(r["rss_mb"], (by.get((HAND_ROLLED, n)) or {}).get("rss_mb"))),
        ]
        parts = []
        for label, bound, higher, value in checks:
            if values := _per_round(by, name, value):
                mid = statistics.median(values)
                met = mid >= bound if higher else mid <= bound
                parts.append(f"{label} {shown(values, ' s' if label == 'cold start' else '×')} "
                             f"({'≥' if higher else '≤'} {bound}: {'pass' if met else 'FAIL'})")
        if parts:
            lines.append(f"- **{name}**: " + "; ".join(parts))
        c32 = _per_round(by, name, lambda r, n: fraction(r["c32"].get("per_cpu_s"), floor(n, "c32", "per_cpu_s")))
        batch = _per_round(by, name, lambda r, n: fraction(r["batch"].get("per_cpu_s"),
                                                           inproc_rows_per_s(n, "rows1000_cpu_us")))
        if c32 or batch:
            lines.append(f"  - per CPU-second of the server: c32 {shown(c32) if c32 else '-'} of asgi-floor's, "
                         f"batch {shown(batch) if batch else '-'} of in-process onnxruntime's")
    return "\n".join(lines)


def _frame(frame: str) -> tuple[str, str]:
    """py-spy's "function (path/file.py:line)" as (function (short path), package); the short path starts at
    the package ("tabserve/api/v1.py", "uvicorn/...") and tabserve counts per subpackage."""
    if frame.startswith("process "):  # --subprocesses puts the process first: samples with no Python frame
        return "(native code, no Python frame)", "(native)"
    name, _, where = frame.partition(" (")
    file = where.split(":")[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    package = "/".join(file.split("/")[:2]) if file.startswith("tabserve/") else file.split("/")[0]
    return f"{name} ({file})", package


def profile_summary(path: Path, top: int = 15) -> str:
    """py-spy's raw (collapsed) stacks as shares of the samples: self time (the innermost Python frame, which
    also carries the C code it called) per function and per package, and the inclusive time of tabserve's own
    functions (every sample with that function anywhere on the stack). Idle threads are not sampled."""
    own: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        function, package = frames[-1]
        own[function] = own.get(function, 0) + n
        packages[package] = packages.get(package, 0) + n
        for name in {f for f, pkg in frames if pkg.startswith("tabserve/")}:
            inclusive[name] = inclusive.get(name, 0) + n
        total += n
    if not total:
        return f"(no samples in {path})"
    # The entry chain (main, serve, the event loop's run) is on every sample of the main thread: leave it out.
    entry = max(inclusive.values(), default=0)
    entry_less = {name: n for name, n in inclusive.items() if n < entry}

    def ranked(shares: dict[str, int], what: str, top: int = top) -> list[str]:
        best = sorted(shares.items(), key=lambda kv: -kv[1])[:top]
        return ["", f"| share | {what} |", "|---|---|", *(f"| {100 * n / total:.1f} % | `{k}` |" for k, n in best)]

    return "\n".join([f"{total} samples. Self time by function:", *ranked(own, "function"), "",
                      "Self time by package:", *ranked(packages, "package"), "",
                      ("Inclusive time of tabserve's functions (less the entry frames on every main-thread "
                      "sample: main, serve):"), *ranked(entry_less, "function", 2 * top)])
