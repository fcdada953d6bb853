"""One inference pipeline for every protocol: the ``DataPlane`` owns the sequence, a ``Codec`` the wire format.

The sequence, whatever the protocol: read the body within the size limit and the memory budget (a large one
peeked at while it arrives), inflate it, select the model version (URL, traffic policy), decode and validate
(inline when small, on a scoring thread when large), charge its rows to the rate limit, score through the
version's micro-batcher, queue the shadow copy, encode, offer the payload record; any ``TabserveError`` becomes
the protocol's error body, and a fault of ours (500) is logged with its traceback under the request id.

A protocol is a ``Codec`` (api/codecs.py): ``peek``, ``decode``, ``encode``, ``error``. Adding one (gRPC, MLflow
``/invocations``) is a new codec and a route that calls ``DataPlane.infer`` with it; docs/architecture.md says
how.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope

from tabserve.api.body import BodyBudget, BodyLease, decompress_body, header, receive_body
from tabserve.api.errors import FAULTS, status_for
from tabserve.api.ratelimit import RateLimiter
from tabserve.api.selection import route_model, select_model
from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput, RangePolicy
from tabserve.errors import TabserveError
from tabserve.observability.logging import get_logger
from tabserve.observability.payload import PayloadSink
from tabserve.observability.requests import REQUEST_START, WHOLE_BODY
from tabserve.serving.batcher import rows_of
from tabserve.serving.facade import ServedModels
from tabserve.settings import Settings

if TYPE_CHECKING:
    from tabserve.api.explain import ExplainService


@dataclass(frozen=True, slots=True)
class PlaneOptions:
    """The settings the request path reads, resolved once."""

    max_body_bytes: int
    inline_max_bytes: int
    max_batch_rows: int
    range_policy: RangePolicy
    timeout_s: float | None

    @classmethod
    def from_settings(cls, settings: Settings) -> PlaneOptions:
        return cls(settings.max_body_bytes, settings.inline_max_bytes, settings.max_batch_rows,
                   settings.range_policy, settings.request_timeout_ms / 1000 or None)


@dataclass(slots=True)
class Decoded:
    """A request as the model sees it: validated rows, range warnings, and what its encoder needs back (v2: the
    parsed request and the outputs it asked for; explain: the method)."""

    x: ModelInput
    warnings: list[str]
    request: Any = None
    outputs: Any = None


class _NoLease:
    """The lease of a body the budget never charges (one the wire lane read: at most ``inline_max_bytes``)."""

    @staticmethod
    def release() -> None:
        pass


_NO_LEASE: Any = _NoLease()


class Codec(Protocol):
    """One wire format. ``peek`` and ``decode`` may run on a worker thread; ``encode`` and ``error`` on the loop."""

    protocol: str  # "v1", "v2", ...: the payload record's and the log's name for it
    charges_rows: bool  # a one-row protocol paid its one unit at the door

    def peek(self, scope: Scope, prefix: bytes) -> None: ...

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded: ...

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response: ...

    def error(self, exc: TabserveError, request_id: str | None) -> Response: ...


class ExplainCodec(Codec, Protocol):
    def explain(self, service: ExplainService, model: Model, decoded: Decoded, t0: float) -> bytes: ...


class DataPlane:
    def __init__(self, models: ServedModels, options: PlaneOptions, budget: BodyBudget, *,
                 limiter: RateLimiter | None = None, payload: PayloadSink | None = None,
                 explainer: ExplainService | None = None) -> None:
        self.models = models
        self.options = options
        self.budget = budget  # one memory budget for every request body the process holds
        self.limiter = limiter  # set when rate limits are on: a batch pays for its rows
        self.payload = payload
        self.explainer = explainer
        self.log = get_logger("tabserve.requests")

    # -- the steps -----------------------------------------------------------------------------------------

    async def read(self, codec: Codec, scope: Scope, receive: Receive, lease: BodyLease) -> bytes:
        """The inflated body, within ``max_body_bytes`` and the budget; the codec may refuse it while it
        arrives (its first MiBs already hold too many rows)."""
        limit = self.options.max_body_bytes
        executor = self.models.executor

        async def peek(prefix: bytes) -> None:
            await asyncio.get_running_loop().run_in_executor(executor, codec.peek, scope, prefix)

        raw = await receive_body(scope, receive, limit, lease, peek)
        return decompress_body(raw, header(scope, b"content-encoding"), limit, lease)

    async def charge(self, codec: Codec, scope: Scope, x: ModelInput) -> None:
        if self.limiter is not None and codec.charges_rows:
            await self.limiter.charge_rows(scope, rows_of(x))

    def fail(self, codec: Codec, scope: Scope, exc: TabserveError) -> Response:
        """The protocol's error body; a fault of ours is logged with its traceback under the request id."""
        request_id = scope.get("state", {}).get("request_id")
        if status_for(exc) in FAULTS:
            cause = exc.__cause__ or exc
            state = scope.get("state", {})
            self.log.error(exc.kind, request_id=request_id, path=scope.get("path"), model=state.get("model"),
                           model_version=state.get("model_version"), error=exc.message,
                           exc_info=(type(cause), cause, cause.__traceback__))
        return codec.error(exc, request_id)

    # -- predictions ---------------------------------------------------------------------------------------

    async def infer(self, codec: Codec, scope: Scope, receive: Receive, name: str | None = None,
                    version: str | None = None) -> Response:
        """One prediction request, from ASGI primitives. ``name``/``version``: what the URL names (None: the
        default model, routed by its traffic policy)."""
        t0 = scope.get(REQUEST_START) or time.perf_counter()
        options = self.options
        body = scope.get(WHOLE_BODY)  # read by the wire lane: within the limits, too small to be charged
        lease = self.budget.lease() if body is None else _NO_LEASE
        try:
            if body is None:
                body = await self.read(codec, scope, receive, lease)
            model = (route_model(self.models, scope, name) if version is None
                     else await select_model(self.models, scope, name, version))
            batcher = self.models.batcher(model)
            pred = None
            if len(body) <= options.inline_max_bytes:
                decoded = codec.decode(model, body, scope)
            else:  # parsing and checking thousands of rows would hold up every other request
                scores_now = self.limiter is None or not codec.charges_rows  # rows are charged before scoring

                def work() -> tuple[Decoded, Prediction | None]:
                    decoded = codec.decode(model, body, scope)
                    return decoded, batcher.score_if_alone(decoded.x) if scores_now else None

                decoded, pred = await asyncio.get_running_loop().run_in_executor(self.models.executor, work)
            await self.charge(codec, scope, decoded.x)
            if pred is None:
                pred = await batcher.predict(decoded.x, options.timeout_s)
            response = codec.encode(model, decoded, pred, t0, scope)
        except TabserveError as exc:
            return self.fail(codec, scope, exc)
        finally:
            lease.release()
        if version is None:
            self.models.shadow(model, decoded.x, pred)
        if self.payload is not None:
            self._offer(codec, scope, model, decoded.x, pred)
        return response

    def _offer(self, codec: Codec, scope: Scope, model: Model, x: ModelInput, pred: Prediction) -> None:
        state = scope.get("state", {})
        # positional, no record object: a sink that samples the request out pays for nothing more
        self.payload.offer(  # type: ignore[union-attr]
            state.get("request_id", ""), model, state.get("variant"), time.time(), x, pred, codec.protocol)

    # -- explanations --------------------------------------------------------------------------------------

    async def explain(self, codec: ExplainCodec, scope: Scope, receive: Receive, name: str | None,
                      version: str | None) -> Response:
        """The same sequence on the explanation worker (its own bounded queue), not the batcher."""
        assert self.explainer is not None
        service = self.explainer
        t0 = time.perf_counter()
        lease = self.budget.lease()
        try:
            body = await self.read(codec, scope, receive, lease)
            model = await select_model(self.models, scope, name, version)
            async with service.admitted():
                decoded = await service.on_worker(codec.decode, model, body, scope)
                await self.charge(codec, scope, decoded.x)
                out = await service.on_worker(codec.explain, service, model, decoded, t0)
        except TabserveError as exc:
            return self.fail(codec, scope, exc)
        finally:
            lease.release()
        return Response(out, media_type="application/json")
