"""What auth, rate limits and the concurrency limit cost per request, in-process (no HTTP, no sockets).

    .venv/bin/python benchmarks/guard_cost.py [--bundle DIR] [--requests 20000] [--repeat 7]

Calls the ASGI app directly with a one-row POST /api/v1/predict (and a 32-row batch), as uvicorn would,
for: the defaults (all off), API keys, a rate limit in memory, a concurrency limit, and all of them with
CORS. Reports the median over --repeat runs of the mean time per request, and the difference to the
defaults. Access log off, metrics on (the defaults otherwise).

Then the guard alone, around an app that answers 200 at once: its own cost, free of the model's and of
the machine's noise (the whole-request differences are a few percent of the request, within that noise
on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import tabserve
from tabserve.api.auth import KeyRing, hash_key
from tabserve.api.guard import Admission, Guard
from tabserve.api.ratelimit import RateLimiter, counters_for

KEY = "tsk_benchmark-key"
ROW = [0.1, 0.2, 0.3, 0.4, 0.5]
KEYS = json.dumps([{"name": f"client{i}", "sha256": hash_key(f"tsk_other{i}"), "scopes": ["predict"]}
                   for i in range(4)] + [{"name": "bench", "sha256": hash_key(KEY), "scopes": ["predict"]}])
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults (all off)": {},
    "api keys (5 configured)": {"api_keys": KEYS},
    "rate limit (memory)": {"rate_limit": "1000000000/second"},
    "concurrency limit": {"max_concurrent_requests": 1000},
    "all + CORS": {"api_keys": KEYS, "rate_limit": "1000000000/second", "max_concurrent_requests": 1000,
                   "cors_origins": "http://localhost:3000"},
}


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"host", b"tabserve"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {KEY}".encode()), (b"origin", b"http://localhost:3000")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def _run(app: Any, path: str, body: bytes, n: int) -> float:
    message = {"type": "http.request", "body": body, "more_body": False}
    template = _scope(path)
    statuses: list[int] = []

    async def receive() -> dict:
        return message

    async def send(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            statuses.append(msg["status"])

    t0 = time.perf_counter()
    for _ in range(n):
        await app(dict(template), receive, send)
    elapsed = time.perf_counter() - t0
    assert set(statuses) == {200}, set(statuses)
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    bundle = args.bundle
    if bundle is None:
        from tabserve.training import train_demo

        bundle = train_demo(home=Path(tempfile.mkdtemp(prefix="tabserve-bench-")))
    model = tabserve.load(bundle)
    bodies = {"1 row": ("/api/v1/predict", json.dumps({"data": ROW}).encode()),
              "32 rows": ("/api/v1/predict/batch", json.dumps({"data": [ROW] * 32}).encode())}
    apps = {name: tabserve.create_app(tabserve.Settings(access_log=False, **extra), model=model)
            for name, extra in VARIANTS.items()}

    async def measure() -> dict[tuple[str, str], float]:
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):  # interleaved, so that drift in the machine's speed hits every variant
            for name, app in apps.items():
                for label, (path, body) in bodies.items():
                    await _run(app, path, body, 500)  # warm
                    results.setdefault((name, label), []).append(await _run(app, path, body, args.requests))
        return {k: statistics.median(v) for k, v in results.items()}

    medians = asyncio.run(measure())
    print(f"in-process ASGI, median of {args.repeat} x {args.requests} requests, µs per request")
    print(f"{'variant':28} {'1 row':>9} {'Δ':>7} {'32 rows':>9} {'Δ':>7}")
    for name in VARIANTS:
        cells = []
        for label in bodies:
            us, base = medians[(name, label)] * 1e6, medians[("defaults (all off)", label)] * 1e6
            cells.append(f"{us:9.1f} {us - base:+7.1f}")
        print(f"{name:28} {'  '.join(cells)}")
    guard_only(args.requests * 5, args.repeat)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def guard_alone(extra: dict[str, Any]) -> Any:
    admission = Admission.from_settings(tabserve.Settings(**extra))
    if not admission.guarded:
        return _ok
    limiter = None
    if admission.quota is not None:
        limiter = RateLimiter(counters_for(admission.storage), admission.quota)
    return Guard(_ok, keys=KeyRing(admission.keys) if admission.keys else None, limiter=limiter,
                 key_quotas=admission.key_quotas, max_concurrent=admission.max_concurrent)


def guard_only(requests: int, repeat: int) -> None:
    apps = {name: guard_alone({k: v for k, v in extra.items() if k != "cors_origins"})
            for name, extra in VARIANTS.items()}

    async def measure() -> dict[str, float]:
        results: dict[str, list[float]] = {}
        for _ in range(repeat):
            for name, app in apps.items():
                await _run(app, "/api/v1/predict", b"", 1000)
                results.setdefault(name, []).append(await _run(app, "/api/v1/predict", b"", requests))
        return {k: statistics.median(v) for k, v in results.items()}

    medians = asyncio.run(measure())
    base = medians["defaults (all off)"] * 1e6
    print("\nthe guard alone (CORS aside), µs per request; the defaults install no guard at all")
    for name in VARIANTS:
        print(f"{name:28} {medians[name] * 1e6 - base:+7.2f}")


if __name__ == "__main__":
    main()
