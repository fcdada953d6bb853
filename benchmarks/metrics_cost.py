"""What recording metrics costs on the hot path, in-process (no HTTP, no event loop).

    .venv/bin/python benchmarks/metrics_cost.py [BUNDLE] [--repeat 5] [--number 50000]

- per request: ``RequestContextMiddleware`` around a trivial ASGI app that answers 200 at once, with and
  without metrics (access log off in both), driven by ``coroutine.send`` so that only the middleware runs;
- per onnxruntime call: the batch recorder the micro-batcher calls (histograms, counters, prediction
  histogram, drift ring), for a batch of 1 row and of 256 rows;
- a scrape of ``/metrics`` after that (PSI over the full drift window included).

Best of ``--repeat`` runs of ``--number`` calls each. BUNDLE defaults to the demo model under TABSERVE_HOME
(trained first if missing).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tabserve
from tabserve.observability.metrics import Metrics
from tabserve.observability.requests import RequestContextMiddleware


async def _answer(scope: dict, receive: Any, send: Any) -> None:
    state = scope["state"]
    state["model"], state["model_version"] = "demo", "1"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message: dict) -> None:
    pass


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


def per_call_us(fn: Callable[[], None], number: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / number * 1e6


def request_through(middleware: RequestContextMiddleware) -> Callable[[], None]:
    template = {"type": "http", "method": "POST", "path": "/api/v1/predict", "headers": [],
                "tabserve.route": "/api/v1/predict"}

    def one() -> None:
        coro = middleware(dict(template), _receive, _send)
        try:
            coro.send(None)
        except StopIteration:
            pass

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=50_000)
    args = parser.parse_args()
    if args.bundle is None:
        from tabserve.training import train_demo

        settings = tabserve.Settings()
        args.bundle = str(settings.demo_model_dir if settings.demo_model_dir.exists() else train_demo())
    model = tabserve.load(args.bundle)
    metrics = Metrics()
    metrics.model_loaded(model)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, model "
          f"{model.name}:{model.version}")

    bare = per_call_us(request_through(RequestContextMiddleware(_answer, access_log=False)),
                       args.number, args.repeat)
    recorded = per_call_us(request_through(RequestContextMiddleware(_answer, access_log=False, metrics=metrics)),
                           args.number, args.repeat)
    print(f"per request: middleware {bare:.2f} µs without metrics, {recorded:.2f} µs with: "
          f"+{recorded - bare:.2f} µs")

    record = metrics.batch_recorder(model)
    rng = np.random.default_rng(0)
    for rows in (1, 256):
        x = model.schema.as_input(rng.normal(size=(rows, model.schema.count)), single=False)
        pred = model.run(x)
        number = args.number if rows == 1 else args.number // 20
        cost = per_call_us(lambda: record(rows, 0.0001, x, pred), number, args.repeat)  # noqa: B023
        print(f"per onnxruntime call of {rows} row(s): +{cost:.2f} µs")

    size = len(metrics.exposition())  # the first one also imports the text format's code
    scrape = per_call_us(metrics.exposition, 20, args.repeat)
    print(f"one scrape: {scrape / 1000:.2f} ms, {size} bytes")


if __name__ == "__main__":
    main()
