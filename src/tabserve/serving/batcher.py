"""Adaptive micro-batching: concurrent requests' rows are scored together, each gets exactly its own back.

decode -> batch -> predict -> unbatch -> encode. With nothing queued, a small request is scored at once on
the event loop (7 µs of onnxruntime is cheaper than any hand-off). Under load, requests queue while a batch
runs in a worker thread; the next batch takes everything queued up to ``max_batch_size`` rows (and waits up
to ``max_queue_delay`` for more when asked to), so batches grow with the load and add no delay when idle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tabserve.core.model import Prediction
from tabserve.core.schema import ModelInput, TabularBatch
from tabserve.errors import DeadlineExceeded, Overloaded, TabserveError


class Scorer(Protocol):
    def run(self, x: ModelInput) -> Prediction: ...


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    max_batch_size: int = 256  # rows per batch; a request at or over it runs alone, straight away
    max_queue_delay_us: int = 0  # extra wait for more rows before a batch runs (0: only what is queued)
    max_queue_size: int = 20_000  # rows waiting; more -> Overloaded (503 + Retry-After)
    inline_max_rows: int = 16  # an idle batcher scores requests up to this size on the event loop


@dataclass(slots=True)
class _Pending:
    x: ModelInput
    rows: int
    future: asyncio.Future[Prediction]
    enqueued: float = field(default_factory=time.perf_counter)


def rows_of(x: ModelInput) -> int:
    return len(x) if isinstance(x, TabularBatch) else x.shape[0]


def concat(parts: list[ModelInput]) -> ModelInput:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)  # type: ignore[arg-type]
    numeric = [p.numeric for p in parts]  # type: ignore[union-attr]
    return TabularBatch(None if numeric[0] is None else np.concatenate(numeric),  # type: ignore[arg-type]
                        np.concatenate([p.categorical for p in parts]))  # type: ignore[union-attr]


def split(pred: Prediction, sizes: list[int]) -> list[Prediction]:
    out, start = [], 0
    for n in sizes:
        proba = None if pred.probabilities is None else pred.probabilities[start:start + n]
        out.append(Prediction(pred.values[start:start + n], proba, pred.latency_s))
        start += n
    return out


class MicroBatcher:
    """One queue per served model version; ``predict`` is what routes await."""

    def __init__(self, scorer: Scorer, executor: Executor, options: BatchingOptions | None = None,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.scorer = scorer
        self.executor = executor
        self.options = options or BatchingOptions()
        self.on_batch = on_batch  # (rows, seconds queued of the oldest request) for metrics
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._running = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def predict(self, x: ModelInput, timeout_s: float | None = None) -> Prediction:
        rows = rows_of(x)
        opts = self.options
        if not self._running and not self._queue and rows <= opts.inline_max_rows:
            return self._score_now(x, rows)
        if rows >= opts.max_batch_size:  # already a full batch: queueing it would only add delay
            return await self._in_thread(x, rows, timeout_s)
        if self._queued_rows + rows > opts.max_queue_size:
            raise Overloaded(f"the request queue is full ({self._queued_rows} rows waiting, limit "
                             f"{opts.max_queue_size}); retry shortly", limit=opts.max_queue_size)
        pending = _Pending(x, rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_rows += rows
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await self._wait(pending, timeout_s)

    def _score_now(self, x: ModelInput, rows: int) -> Prediction:
        pred = self.scorer.run(x)
        if self.on_batch is not None:
            self.on_batch(rows, 0.0)
        return pred

    async def _in_thread(self, x: ModelInput, rows: int, timeout_s: float | None) -> Prediction:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.executor, self._score_now, x, rows)
        if timeout_s is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"the prediction did not finish within the {timeout_s * 1000:.0f} ms "
                                   "deadline") from None

    async def _wait(self, pending: _Pending, timeout_s: float | None) -> Prediction:
        if timeout_s is None:
            return await pending.future
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            if not pending.future.done():
                pending.future.cancel()  # the runner skips it: the request leaves the queue
            raise DeadlineExceeded(f"the prediction did not finish within the {timeout_s * 1000:.0f} ms "
                                   "deadline (the server is busy)") from None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self.options.max_queue_delay_us and self._queued_rows < self.options.max_batch_size:
                    await asyncio.sleep(self.options.max_queue_delay_us / 1e6)
                batch = self._take()
                if batch:
                    await self._run(loop, batch)
        finally:
            self._running = False

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        limit = self.options.max_batch_size
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled by its deadline
                self._queue.popleft()
                self._queued_rows -= head.rows
                continue
            if batch and rows + head.rows > limit:
                break
            self._queue.popleft()
            self._queued_rows -= head.rows
            batch.append(head)
            rows += head.rows
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        sizes = [p.rows for p in batch]
        waited = time.perf_counter() - batch[0].enqueued
        try:
            x = batch[0].x if len(batch) == 1 else concat([p.x for p in batch])
            pred = await loop.run_in_executor(self.executor, self.scorer.run, x)
        except Exception:
            # One request's rows may have broken the batch: score each alone so only it fails.
            await self._run_each(loop, batch)
            return
        if self.on_batch is not None:
            self.on_batch(sum(sizes), waited)
        for p, part in zip(batch, split(pred, sizes), strict=True):
            if not p.future.done():
                p.future.set_result(part)

    async def _run_each(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        for p in batch:
            try:
                result = await loop.run_in_executor(self.executor, self.scorer.run, p.x)
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                if not p.future.done():
                    p.future.set_exception(exc if isinstance(exc, TabserveError) else _scoring_error(exc))
                continue
            if not p.future.done():
                p.future.set_result(result)


def _scoring_error(exc: Exception) -> TabserveError:
    from tabserve.errors import InvalidInput

    return InvalidInput(f"the model could not score these rows: {exc}")

