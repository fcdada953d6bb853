"""Explanation routes: ``POST /api/v1/explain``, ``POST /v2/models/{m}[/versions/{v}]/explain`` and
``GET /api/v1/models/{m}/importance``.

Explanations run on their own bounded worker (``ExplainService``), never on the prediction executor:
``explain_workers`` threads (1) at the idle scheduling priority (the numba kernel releases the GIL, and a
core goes to predictions first whenever both want it), at most ``explain_max_pending`` (16) requests in
flight (more get 503 + Retry-After), at most ``explain_max_rows`` (1000) rows per request. A model's
explain data is loaded, and the kernel compiled, on its first explanation, in that worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tabserve.api.codecs import ExplainLimits, ExplainV1Codec, ExplainV2Codec
from tabserve.api.dataplane import DataPlane
from tabserve.api.errors import error_response
from tabserve.api.openapi import body_doc
from tabserve.api.routes import Route
from tabserve.api.selection import select_model
from tabserve.core.explain.explainer import Explainer, ExplainUnavailable, Explanation, Method
from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.errors import Overloaded, TabserveError
from tabserve.protocol import explain as shapes
from tabserve.protocol.v1 import ErrorResponse
from tabserve.settings import Settings

NICENESS = 10  # the explain thread's scheduling priority, below the event loop's and the scoring threads'
_DEFAULT = {name: Settings.model_fields[f"explain_{name}"].default  # the settings' defaults, not copies
            for name in ("workers", "max_pending", "max_rows")}

_ERRORS = {422: {"model": ErrorResponse, "description": "Invalid input, or the model has no explanation data"},
           503: {"model": ErrorResponse, "description": "No model is ready, or the explanation queue is full"}}


class ExplainService:
    """The explanation worker: a bounded queue in front of its own thread pool."""

    def __init__(self, workers: int = _DEFAULT["workers"], max_pending: int = _DEFAULT["max_pending"],
                 max_rows: int = _DEFAULT["max_rows"]) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tabserve-explain",
                                           initializer=_lower_priority)
        self.max_pending = max_pending
        self.max_rows = max_rows
        self.pending = 0  # touched on the event loop only
        self._explainers: weakref.WeakKeyDictionary[Model, Explainer | ExplainUnavailable] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def explainer(self, model: Model) -> Explainer:
        """The model's explainer, built on first use (in the worker); ``ExplainUnavailable`` if it has none."""
        with self._lock:
            found = self._explainers.get(model)
            if found is None:
                try:
                    found = Explainer.from_bundle(model.bundle)
                    found.warm_up()
                except ExplainUnavailable as exc:
                    found = exc
                self._explainers[model] = found
        if isinstance(found, ExplainUnavailable):
            raise found
        return found

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One request's place in the queue, held across its steps; ``Overloaded`` when the queue is full."""
        if self.pending >= self.max_pending:
            raise Overloaded(f"{self.pending} explanation requests are already queued or running (the limit); "
                             "retry shortly. Predictions are not affected")
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def on_worker(self, work: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    async def run(self, work: Any, *args: Any) -> Any:
        async with self.admitted():
            return await self.on_worker(work, *args)

    def explain(self, model: Model, x: ModelInput, method: Method) -> tuple[Explanation, Prediction]:
        explanation = self.explainer(model).explain(x, method)
        return explanation, model.run(x)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class ExplainEndpoints:
    """The explanation routes: the data plane with the explain codecs, on the explanation worker."""

    def __init__(self, plane: DataPlane | None, settings: Settings, service: ExplainService | None = None) -> None:
        self.plane = plane
        self.settings = settings
        self.service = service or ExplainService(settings.explain_workers, settings.explain_max_pending,
                                                 settings.explain_max_rows)
        limits = ExplainLimits(self.service.max_rows, settings.max_batch_rows)
        self.max_rows = limits.max_rows
        self.v1 = ExplainV1Codec(limits)
        self.v2 = ExplainV2Codec(limits)

    @property
    def _plane(self) -> DataPlane:
        assert self.plane is not None, "explanations need a data plane"
        return self.plane

    async def explain(self, request: Request) -> Response:
        return await self._plane.explain(self.v1, request.scope, request.receive, None, None)

    async def explain_model(self, request: Request, name: str) -> Response:
        return await self._plane.explain(self.v1, request.scope, request.receive, name, None)

    async def explain_v2(self, request: Request, model_name: str) -> Response:
        return await self._plane.explain(self.v2, request.scope, request.receive, model_name, None)

    async def explain_v2_version(self, request: Request, model_name: str, model_version: str) -> Response:
        return await self._plane.explain(self.v2, request.scope, request.receive, model_name, model_version)

    async def importance(self, request: Request, name: str) -> Response:
        try:
            model = await select_model(self._plane.models, request.scope, name, None)
            found = model.manifest.importance
            if found is None:
                raise ExplainUnavailable(f"model {model.name}:{model.version} has no recorded feature importance: "
                                         "its bundle was written before tabserve computed it; train or import "
                                         "it again")
        except TabserveError as exc:
            return error_response(exc)
        return Response(orjson.dumps({"model_name": model.name, "model_version": model.version,
                                      **found.model_dump(mode="json")}), media_type="application/json")

    def routes(self) -> list[Route]:
        tags = ["explanations"]
        return [
            Route("POST", "/api/v1/explain", "predict", self.explain, doc={
                "summary": "Explain predictions (SHAP)", "responses": _ERRORS, "openapi_extra": body_doc(shapes.ExplainBody),
                "tags": tags}),
            Route("POST", "/api/v1/models/{name}/explain", "predict", self.explain_model, doc={
                "summary": "Explain one served model's predictions (SHAP)", "responses": _ERRORS,
                "openapi_extra": body_doc(shapes.ExplainBody), "tags": tags}),
            Route("GET", "/api/v1/models/{name}/importance", "read", self.importance, doc={
                "summary": "Global feature importance recorded at train/import time", "tags": tags,
                "responses": {404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}}),
            Route("POST", "/v2/models/{model_name}/explain", "predict", self.explain_v2, doc={
                "summary": "Explain (Open Inference Protocol tensors)", "responses": _ERRORS, "tags": tags}),
            Route("POST", "/v2/models/{model_name}/versions/{model_version}/explain", "predict",
                  self.explain_v2_version, doc={"summary": "Explain with one version", "responses": _ERRORS,
                                                    "tags": tags}),
        ]


def _lower_priority() -> None:
    """Make the explain thread yield the CPU to predictions. On Linux a thread is a task with its own scheduling
    policy: SCHED_IDLE runs it only on a core nothing else wants, and a waking request thread preempts it at
    once (a mere nice value still lets it delay the event loop by a scheduler slice: measured, prediction p99
    0.98 -> 4.6 ms under explanation load on 2 cores). Lowering one's own priority needs no privilege;
    elsewhere the nice value, or nothing."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, tid, NICENESS)
