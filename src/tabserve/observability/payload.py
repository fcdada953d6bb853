"""What the data plane hands to the payload log: one record per answered prediction request.

The data plane builds a ``PayloadRecord`` from objects it already holds (no copy, no column naming) and calls
``PayloadSink.offer`` once per request after the answer is encoded. ``offer`` must return at once and never
raise: sampling, turning rows into named columns and writing happen behind it, off the request path
(``tabserve.loop.payload`` is the Parquet implementation). A sink that cannot keep up drops and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tabserve.core.model import Model, Prediction
from tabserve.core.schema import ModelInput


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 2 us per request here
# against 0.5 us; nothing mutates a record once offered.
@dataclass(slots=True)
class PayloadRecord:
    request_id: str
    model: Model  # the version that really answered: name, version and manifest (feature names, task)
    variant: str | None  # the A/B label that picked it, None when no traffic policy applies
    timestamp: float  # time.time() when the answer was ready
    inputs: ModelInput  # the validated rows, exactly as scored
    prediction: Prediction  # values and probabilities for every row of ``inputs``
    protocol: str  # "v1", "v2", "grpc", "invocations"


class PayloadSink(Protocol):
    def offer(self, record: PayloadRecord) -> None:
        """Take the record or drop it (sampled out, queue full); never block, never raise."""


__all__ = ["PayloadRecord", "PayloadSink"]
