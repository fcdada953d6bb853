"""Ground truth by request id: check labels against the model, append them to the log's feedback folder.

Feedback names the model it is for (``"model"``, default: the server's default model) because the join
happens later, on files, by whoever reads them (another replica, ``tabserve retrain``): it cannot wait for the
request to be found. Each accepted request becomes one Parquet file (``MODEL/feedback/date=.../part-...``,
written whole, fsynced, renamed), so feedback survives a crash the moment it is acknowledged. Ids that neither
this process's recent log nor the published files know yet are reported as ``unknown`` but kept: the request
may sit in another replica's unpublished file (up to its rotation time) or have been sampled out; only the join
decides, and ``GET .../quality`` counts the labels that never matched (``unmatched_feedback``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tabserve.core.model import Model
from tabserve.core.quoting import quoted
from tabserve.errors import InvalidInput
from tabserve.loop.columns import TIMESTAMP
from tabserve.loop.store import FEEDBACK, LogStore, part_name

MAX_REQUEST_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Label:
    request_id: str
    row: int
    label: str | float


def parse_feedback(body: Any, model: Model, max_items: int) -> list[Label]:
    """``{"request_id", "label", "row"?}`` or ``{"feedback": [...]}`` -> labels checked against ``model``."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object with 'request_id' and 'label', or 'feedback': a list "
                           f"of such objects; got {type(body).__name__}")
    if "feedback" in body:
        items = body["feedback"]
        if not isinstance(items, list) or not items:
            raise InvalidInput("'feedback' must be a non-empty list of {\"request_id\", \"label\", \"row\"?} "
                               "objects")
        if len(items) > max_items:
            raise InvalidInput(f"'feedback' holds {len(items)} labels; at most {max_items} per request")
        return [_label(item, model, f"feedback[{i}]") for i, item in enumerate(items)]
    return [_label(body, model, "the body")]


def _label(item: Any, model: Model, where: str) -> Label:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object with 'request_id' and 'label'; got {type(item).__name__}")
    rid = item.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID_CHARS:
        raise InvalidInput(f"{where}: 'request_id' must be the non-empty string (at most {MAX_REQUEST_ID_CHARS} "
                           f"characters) of the prediction's X-Request-ID; got {quoted(rid)}")
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise InvalidInput(f"{where}: 'row' must be the row's index (an integer >= 0) in a batch request; "
                           f"got {quoted(row)}")
    if "label" not in item:
        raise InvalidInput(f"{where}: 'label' is missing: the true value of the prediction")
    label = item["label"]
    if model.is_classifier:
        classes = [str(c) for c in model.classes or []]
        text = label if isinstance(label, str) else None
        if isinstance(label, int | float) and not isinstance(label, bool):  # JSON 1 or 1.0 for class 1
            text = str(int(label)) if isinstance(label, float) and label.is_integer() else str(label)
        if text is None or text not in classes:
            raise InvalidInput(f"{where}: label {quoted(label)} is not a class of model {model.name} (its classes: "
                               f"{', '.join(map(repr, classes))})")
        return Label(rid, row, text)
    if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
        raise InvalidInput(f"{where}: label {quoted(label)} is not a finite number; model {model.name} is a "
                           f"{model.manifest.task} model")
    return Label(rid, row, float(label))


def feedback_schema(classifier: bool) -> pa.Schema:
    return pa.schema([pa.field("request_id", pa.string()), pa.field("row", pa.int32()),
                      pa.field("label", pa.string() if classifier else pa.float64()),
                      pa.field("received_at", TIMESTAMP)])


def append_feedback(store: LogStore, model: Model, labels: list[Label], now: float | None = None) -> str:
    """Write ``labels`` as one published file; returns its name. Blocking (fsync): call it off the event loop."""
    now = time.time() if now is None else now
    schema = feedback_schema(model.is_classifier)
    table = pa.table({
        "request_id": pa.array([x.request_id for x in labels], pa.string()),
        "row": pa.array([x.row for x in labels], pa.int32()),
        "label": pa.array([x.label for x in labels], schema.field("label").type),
        "received_at": pa.array(np.full(len(labels), int(now * 1_000_000), dtype=np.int64)).cast(TIMESTAMP),
    }, schema=schema)
    return store.write(part_name(model.name, FEEDBACK, now), lambda handle: pq.write_table(table, handle))
