"""``tabserve bench``: model init time and per-prediction latency, in-process or over HTTP."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from tabserve.cli import command_help
from tabserve.core.manifest import Manifest
from tabserve.errors import TabserveError
from tabserve.settings import Settings

EPILOG = """examples:
  tabserve bench                              # the demo model, in-process, 100 predictions
  tabserve bench ./bundle -n 1000 --rows 100  # 1000 predictions of 100 rows each
  tabserve bench models:/houses@champion      # a registry version (downloaded first, not timed)
  tabserve bench --url http://127.0.0.1:8000  # the same over HTTP against a running server"""


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help=command_help("bench"),
                       description="Measure model init time and min/avg/p50/p99/max latency of predictions: "
                       "in-process (load + onnxruntime, validation included) or over HTTP with --url.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="bundle or model folder, or a registry version models:/NAME@ALIAS | "
                   "models:/NAME/VERSION (default: the demo model)")
    p.add_argument("-n", "--requests", type=int, default=100, help="number of timed predictions (default 100)")
    p.add_argument("--rows", type=int, default=1, help="rows per prediction (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed predictions first (default 10)")
    p.add_argument("--url", help="benchmark a running server at this base URL instead, e.g. http://127.0.0.1:8000")
    p.add_argument("-c", "--concurrency", type=int, default=1,
                   help="with --url: keep-alive connections sending at once (default 1); with more than one, "
                   "reports requests/s over --duration")
    p.add_argument("--duration", type=float, default=10.0,
                   help="with --url and --concurrency > 1: seconds of load (default 10)")
    p.add_argument("--json", action="store_true", help="print the numbers as one JSON object")
    p.set_defaults(run=run)


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"min_ms": ms[0], "avg_ms": statistics.fmean(ms), "p50_ms": _pct(ms, 50), "p99_ms": _pct(ms, 99),
            "max_ms": ms[-1]}


def _pct(sorted_ms: list[float], q: float) -> float:
    return float(np.percentile(sorted_ms, q))


def sample_rows(manifest: Manifest, n: int, seed: int = 0) -> list[list[float | str]]:
    """Plausible rows: each numeric feature drawn around its training mean, clipped to the training range;
    each categorical one among its training categories."""
    rng = np.random.default_rng(seed)
    cols: list[list[float | str]] = []
    for f in manifest.features:
        s = f.stats
        if f.kind == "categorical":
            cols.append([str(c) for c in rng.choice(f.categories or [""], n)])
            continue
        col = rng.normal(s.mean, s.std or 1.0, n).clip(s.min, s.max) if s else rng.normal(0, 1, n)
        cols.append(col.round(6).tolist())
    return [list(row) for row in zip(*cols, strict=True)]


def bench_in_process(path: Path, n: int, rows: int, warmup: int) -> dict[str, Any]:
    from tabserve.serving.manager import ModelManager

    t0 = time.perf_counter()
    manager = ModelManager()
    model = manager.load(path)
    init_s = time.perf_counter() - t0
    data = sample_rows(model.manifest, rows)
    schema = model.schema

    def once() -> float:
        t = time.perf_counter()
        x = schema.row(data[0]) if rows == 1 else schema.rows(data, max_rows=rows)
        model.run(x)
        return time.perf_counter() - t

    for _ in range(warmup):
        once()
    samples = [once() for _ in range(n)]
    manager.close()
    return {"mode": "in-process", "model": f"{model.name}:{model.version}", "path": str(model.bundle.path),
            "init_ms": init_s * 1000, "requests": n, "rows": rows, **summarize(samples)}


def bench_http(url: str, n: int, rows: int, warmup: int) -> dict[str, Any]:
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    base = parts.path.rstrip("/")

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, base + path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")

    manifest, described = _served_manifest(url)
    data = sample_rows(manifest, rows)
    path, body = ("/api/v1/predict", {"data": data[0]}) if rows == 1 else ("/api/v1/predict/batch", {"data": data})
    payload = json.dumps(body).encode()
    for _ in range(warmup):
        call("POST", path, payload)
    samples, server_ms = [], []
    for _ in range(n):
        t = time.perf_counter()
        status, out = call("POST", path, payload)
        samples.append(time.perf_counter() - t)
        if status != 200:
            raise TabserveError(f"POST {path} answered {status}: {out}")
        server_ms.append(out["latency_ms"])
    conn.close()
    return {"mode": "http", "url": url, "model": f"{manifest.name}:{manifest.version}",
            "init_ms": described["serving"]["load_ms"], "requests": n, "rows": rows, **summarize(samples),
            "server_inference_avg_ms": statistics.fmean(server_ms)}


def bench_http_load(url: str, rows: int, concurrency: int, duration_s: float) -> dict[str, Any]:
    from tabserve.cli.loadgen import run_load

    manifest, _ = _served_manifest(url)
    data = sample_rows(manifest, rows)
    path, body = ("/api/v1/predict", {"data": data[0]}) if rows == 1 else ("/api/v1/predict/batch", {"data": data})
    payload = json.dumps(body).encode()
    run_load(url, path, payload, concurrency=concurrency, duration_s=min(1.0, duration_s))  # warm-up
    result = run_load(url, path, payload, concurrency=concurrency, duration_s=duration_s)
    if not result.latencies_s:
        raise TabserveError(f"no request to {url}{path} completed ({result.errors} connection errors)")
    ok = result.statuses.get(200, 0)
    return {"mode": "http-load", "url": url, "model": f"{manifest.name}:{manifest.version}", "rows": rows,
            "concurrency": concurrency, "requests": result.requests, "duration_s": result.elapsed_s,
            "req_per_s": result.requests / result.elapsed_s, "rows_per_s": ok * rows / result.elapsed_s,
            "statuses": {str(k): v for k, v in sorted(result.statuses.items())}, "errors": result.errors,
            **summarize(result.latencies_s)}


def _served_manifest(url: str) -> tuple[Manifest, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    conn.request("GET", parts.path.rstrip("/") + "/api/v1/models")
    resp = conn.getresponse()
    info = json.loads(resp.read() or b"{}")
    conn.close()
    if resp.status != 200 or not info.get("models"):
        raise TabserveError(f"{url} has no model ready (GET /api/v1/models answered {resp.status}: {info})")
    described = info["models"][0]
    fields = {k: v for k, v in described.items() if k in Manifest.model_fields}  # not serving, traffic, ...
    return Manifest.model_validate(fields), described


def run(args: argparse.Namespace) -> int:
    from tabserve.observability.logging import configure_logging

    configure_logging("warning")
    if args.requests < 1 or args.rows < 1:
        raise TabserveError("-n and --rows must be at least 1")
    if args.url and args.concurrency > 1:
        result = bench_http_load(args.url, args.rows, args.concurrency, args.duration)
    elif args.url:
        result = bench_http(args.url, args.requests, args.rows, args.warmup)
    else:
        from tabserve.cli.serve import ensure_model
        from tabserve.registry import is_registry_uri, local_bundle

        if args.model and is_registry_uri(args.model):  # fetched into the cache before the clock starts
            settings = Settings()
            path = local_bundle(args.model, home=settings.home, timeout_s=settings.registry_timeout_s)
        else:
            path = ensure_model(Settings(**({"model_path": Path(args.model)} if args.model else {})))
        result = bench_in_process(path, args.requests, args.rows, args.warmup)
    if args.json:
        print(json.dumps(result))
        return 0
    if result["mode"] == "http-load":
        print(f"model {result['model']} (http, {result['url']}), {result['concurrency']} connections, "
              f"{result['rows']} row(s) per request, {result['duration_s']:.1f} s")
        print(f"{result['req_per_s']:.0f} requests/s ({result['rows_per_s']:.0f} rows/s), statuses "
              f"{result['statuses']}, connection errors {result['errors']}")
        print(f"latency: min {result['min_ms']:.3f} ms, avg {result['avg_ms']:.3f} ms, p50 {result['p50_ms']:.3f} ms, "
              f"p99 {result['p99_ms']:.3f} ms, max {result['max_ms']:.3f} ms")
        return 0
    where = result.get("path") or result.get("url")
    print(f"model {result['model']} ({result['mode']}, {where})")
    init_what = "read + verify + session + warm-up" if result["mode"] == "in-process" else "as the server reports"
    print(f"model init time: {result['init_ms']:.1f} ms ({init_what})")
    print(f"latency over {result['requests']} predictions of {result['rows']} row(s): "
          f"min {result['min_ms']:.3f} ms, avg {result['avg_ms']:.3f} ms, p50 {result['p50_ms']:.3f} ms, "
          f"p99 {result['p99_ms']:.3f} ms, max {result['max_ms']:.3f} ms")
    if "server_inference_avg_ms" in result:
        print(f"server-side inference avg: {result['server_inference_avg_ms']:.3f} ms")
    sys.stdout.flush()
    return 0
