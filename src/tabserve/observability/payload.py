"""What the data plane hands to the payload log: one offer per answered prediction request.

The data plane calls ``PayloadSink.offer`` once per request after the answer is encoded, with objects it already
holds (no copy, no column naming, no record object built: a dataclass's ``__init__`` alone cost ~0.5 us a request,
paid even for a request the sink then samples out). ``offer`` must return at once and never raise: sampling,
turning rows into named columns and writing happen behind it, off the request path (``tabserve.loop.payload``
is the Parquet implementation). A sink that cannot keep up drops and counts. The arrays offered are not
written to afterwards (the decoder builds the inputs per request; predictions are slices of a fresh model
output), so a sink may keep references to them instead of copies.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput


class PayloadRecord(NamedTuple):
    """One offer's arguments, in their order: what a sink that keeps them whole (tests) stores."""

    request_id: str
    model: Model  # the version that really answered: name, version and manifest (feature names, task)
    variant: str | None  # the A/B label that picked it, None when no traffic policy applies
    timestamp: float  # time.time() when the answer was ready
    inputs: ModelInput  # the validated rows, exactly as scored
    prediction: Prediction  # values and probabilities for every row of ``inputs``
    protocol: str  # "v1", "v2", "grpc", "invocations"


class PayloadSink(Protocol):
    def offer(self, request_id: str, model: Model, variant: str | None, timestamp: float, inputs: ModelInput,
              prediction: Prediction, protocol: str) -> None:
        """Take the prediction or drop it (sampled out, queue full); never block, never raise. The arguments
        are ``PayloadRecord``'s fields: ``sink.offer(*record)`` offers a record."""


__all__ = ["PayloadRecord", "PayloadSink"]
