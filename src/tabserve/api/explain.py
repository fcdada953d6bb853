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
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tabserve.api.body import BodyBudget, BodyLease, decompress_body, header, receive_body
from tabserve.api.errors import error_response, v2_error_response
from tabserve.api.openapi import body_doc
from tabserve.api.ratelimit import RateLimiter
from tabserve.api.selection import select_model
from tabserve.api.v2 import HEADER_LENGTH_KEY
from tabserve.core.explain.explainer import Explainer, ExplainUnavailable, Explanation, Method
from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput
from tabserve.errors import Overloaded, TabserveError
from tabserve.protocol import explain as shapes
from tabserve.protocol import v1, v2
from tabserve.protocol.v1 import ErrorResponse
from tabserve.protocol.v2_inputs import model_input
from tabserve.serving.batcher import rows_of
from tabserve.serving.manager import ModelManager
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
    def __init__(self, manager: ModelManager, settings: Settings, service: ExplainService | None = None) -> None:
        self.manager = manager
        self.settings = settings
        self.service = service or ExplainService(settings.explain_workers, settings.explain_max_pending,
                                                 settings.explain_max_rows)
        self.max_rows = min(self.service.max_rows, settings.max_batch_rows)
        self.rows_setting = "explain_max_rows" if self.service.max_rows < settings.max_batch_rows else \
            "max_batch_rows"
        self.limiter: RateLimiter | None = None  # set by create_app when rate limits are on: rows are charged
        self.budget = BodyBudget.from_settings(settings)  # create_app shares one with v1 and v2

    async def _charged(self, request: Request, x: ModelInput) -> None:
        """An explanation pays for its rows like a batch prediction (its request paid 1 at the door)."""
        if self.limiter is not None:
            await self.limiter.charge_rows(request.scope, rows_of(x))

    async def _body(self, request: Request, lease: BodyLease, peek: Any = None) -> bytes:
        limit = self.settings.max_body_bytes
        raw = await receive_body(request.scope, request.receive, limit, lease, peek)
        return decompress_body(raw, header(request.scope, b"content-encoding"), limit, lease)

    async def _peek_rows(self, prefix: bytes) -> None:
        """A v1 explanation body whose first MB already holds too many rows is refused while it arrives."""
        await asyncio.get_running_loop().run_in_executor(self.manager.executor, lambda: v1.check_prefix(
            prefix, self.max_rows, setting=self.rows_setting))

    async def explain(self, request: Request) -> Response:
        return await self._v1(request, None)

    async def explain_model(self, request: Request, name: str) -> Response:
        return await self._v1(request, name)

    async def _v1(self, request: Request, name: str | None) -> Response:
        t0 = time.perf_counter()
        lease = self.budget.lease()
        try:
            body = await self._body(request, lease, self._peek_rows)
            model = await select_model(self.manager, request.scope, name, None)

            def decode() -> tuple[shapes.ExplainRequest, ModelInput]:
                v1.check_rows(body, self.max_rows, model.schema.count, setting=self.rows_setting)
                parsed = shapes.decode_request(body)
                return parsed, shapes.model_rows(model, parsed, self.max_rows)

            def work(parsed: shapes.ExplainRequest, x: ModelInput) -> bytes:
                explanation, pred = self.service.explain(model, x, parsed.method)
                return shapes.encode_v1(model, explanation, pred, parsed, time.perf_counter() - t0)

            async with self.service.admitted():
                parsed, x = await self.service.on_worker(decode)
                await self._charged(request, x)
                out = await self.service.on_worker(work, parsed, x)
        except TabserveError as exc:
            return error_response(exc)
        finally:
            lease.release()
        return Response(out, media_type="application/json")

    async def explain_v2(self, request: Request, model_name: str) -> Response:
        return await self._v2(request, model_name, None)

    async def explain_v2_version(self, request: Request, model_name: str, model_version: str) -> Response:
        return await self._v2(request, model_name, model_version)

    async def _v2(self, request: Request, name: str, version: str | None) -> Response:
        lease = self.budget.lease()
        try:
            body = await self._body(request, lease)
            model = await select_model(self.manager, request.scope, name, version)
            header_length = header(request.scope, HEADER_LENGTH_KEY)
            limit = v2.RowLimit(self.max_rows, model.schema.count, self.rows_setting)

            def decode() -> tuple[str | None, Method, ModelInput]:
                parsed = v2.decode_infer_request(body, header_length, limit)
                _, method = shapes.options(_v2_parameters(body, header_length))
                x = model_input(model.schema, v2.Signature(model).input_names, parsed.inputs,
                                max_rows=self.max_rows)
                return parsed.id, method, x

            def work(request_id: str | None, method: Method, x: ModelInput) -> bytes:
                explanation, pred = self.service.explain(model, x, method)
                return shapes.encode_v2(model, explanation, pred, request_id)

            async with self.service.admitted():
                request_id, method, x = await self.service.on_worker(decode)
                await self._charged(request, x)
                out = await self.service.on_worker(work, request_id, method, x)
        except TabserveError as exc:
            return v2_error_response(exc)
        finally:
            lease.release()
        return Response(out, media_type="application/json")

    async def importance(self, request: Request, name: str) -> Response:
        try:
            model = await select_model(self.manager, request.scope, name, None)
            found = model.manifest.importance
            if found is None:
                raise ExplainUnavailable(f"model {model.name}:{model.version} has no recorded feature importance: "
                                         "its bundle was written before tabserve computed it; train or import "
                                         "it again")
        except TabserveError as exc:
            return error_response(exc)
        return Response(orjson.dumps({"model_name": model.name, "model_version": model.version,
                                      **found.model_dump(mode="json")}), media_type="application/json")


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


def _v2_parameters(body: bytes, header_length: str | None) -> dict[str, Any]:
    """The request's ``parameters`` object (``method``), from its JSON part."""
    json_part = body[:int(header_length)] if header_length and header_length.isdigit() else body
    params = v2.parameters(v2.decode_object(json_part).get("parameters"), "parameters")
    return {k: params[k] for k in ("method",) if k in params}


def build_explain_router(ep: ExplainEndpoints) -> APIRouter:
    router = APIRouter(tags=["explanations"])
    router.add_api_route("/api/v1/explain", ep.explain, methods=["POST"], summary="Explain predictions (SHAP)",
                         responses=_ERRORS, openapi_extra=body_doc(shapes.ExplainBody))
    router.add_api_route("/api/v1/models/{name}/explain", ep.explain_model, methods=["POST"],
                         summary="Explain one served model's predictions (SHAP)", responses=_ERRORS,
                         openapi_extra=body_doc(shapes.ExplainBody))
    router.add_api_route("/api/v1/models/{name}/importance", ep.importance, methods=["GET"],
                         summary="Global feature importance recorded at train/import time",
                         responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    router.add_api_route("/v2/models/{model_name}/explain", ep.explain_v2, methods=["POST"],
                         summary="Explain (Open Inference Protocol tensors)", responses=_ERRORS)
    router.add_api_route("/v2/models/{model_name}/versions/{model_version}/explain", ep.explain_v2_version,
                         methods=["POST"], summary="Explain with one version", responses=_ERRORS)
    return router
