"""The Open Inference Protocol (v2: KServe, Triton, MLServer): inference requests in, responses and metadata out.

Requests are decoded with orjson and checked by hand (no pydantic per request); ``tabserve.protocol.v2_docs``
documents the shapes for OpenAPI. Request parameters honoured: ``binary_data_output`` (request),
``binary_data`` (requested output) and ``binary_data_size`` (input); any other parameter is ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted
from tabserve.errors import InvalidInput
from tabserve.protocol import json_scan
from tabserve.protocol.tensors import (
    BYTES,
    BinaryReader,
    Tensor,
    check_datatype,
    check_shape,
    datatype_for,
    from_binary,
    from_json,
    split_body,
    to_binary,
)
from tabserve.protocol.v1 import model_format
from tabserve.protocol.v2_inputs import ModelTensors

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data", "model_repository")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_SCORE_COLUMNS = {"score": 0, "decision": 1}  # columns of an anomaly model's Prediction.probabilities


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output of the model
    binary_output: bool


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    role: str
    datatype: str
    shape: list[int | None]


# -- requests -------------------------------------------------------------------------------------------------

def decode_object(body: bytes | memoryview, *, allow_empty: bool = False) -> dict[str, Any]:
    if not body:
        if allow_empty:
            return {}
        raise InvalidInput('the request body is empty; send a JSON object such as {"inputs": [...]}')
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raw = bytes(body)
        hint = " (NaN and Infinity are not valid JSON numbers)" if b"NaN" in raw or b"Infinity" in raw else ""
        raise InvalidInput(f"the request body is not valid JSON: {exc}{hint}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"the request body must be a JSON object; got a {type(payload).__name__}")
    return payload


def parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"'parameters' of {where} must be an object; got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class RowLimit:
    """The most rows one request may carry, the setting that says so, and the model's feature count (what bounds
    the values of a request's JSON)."""

    rows: int
    features: int
    setting: str = "max_batch_rows"


_SLACK = 1024  # arrays, objects and commas a request may hold besides its data (parameters, outputs)
_DECLARED_ROWS = re.compile(rb'"shape"\s*:\s*\[\s*(\d{1,18})')


def check_json_size(json_part: bytes | memoryview, limit: RowLimit) -> None:
    """Refuse (400) a request whose JSON holds more arrays, objects or values than ``limit.rows`` rows of the model's
    features can, counted on its bytes before it is parsed (parsing 10^6 nested rows costs ~0.6 s and 250 MB).

    Every layout holds at most one array per row per input (nested rows) and one value per row and feature; a
    request that cannot hold more (too short, or too few brackets and commas in a first count) is not scanned.
    """
    inputs = limit.features + 2  # the model's tensors, or one per feature
    max_containers = inputs * (limit.rows + 4) + _SLACK
    max_commas = limit.rows * limit.features + 16 * inputs + _SLACK
    if len(json_part) <= 2 * min(max_containers, max_commas):  # "[]," and ",1" take two bytes at least
        return
    raw = bytes(json_part)
    containers, commas = json_scan.upper_bounds(raw)
    if containers <= max_containers and commas <= max_commas:
        return
    counts = json_scan.count(raw)
    if counts is None or (counts.containers <= max_containers and counts.commas <= max_commas):
        return  # not one JSON object (the parser says what is wrong), or not too large after all
    declared = max((int(m.group(1)) for m in _DECLARED_ROWS.finditer(raw[:1 << 20])), default=0)
    if declared > limit.rows:
        raise InvalidInput(f"an input's shape declares {declared} rows; the limit is {limit.rows} rows per "
                           f"request ({limit.setting}): split the batch", limit=limit.rows)
    raise InvalidInput(f"the request holds {counts.containers} JSON arrays and objects and about "
                       f"{counts.commas + 1} values: more than {limit.rows} rows ({limit.setting}) of "
                       f"{limit.features} features can hold: split the batch", limit=limit.rows)


_SHAPE_KEY = re.compile(rb'[{,]\s*"shape"\s*:\s*\[\s*(\d{1,18})')  # a '"' after '{' or ',' is never in a string


def check_prefix(prefix: bytes, header_length: str | None, limit: RowLimit) -> None:
    """Refuse (400) a request whose first bytes, while the rest is still arriving, declare more rows than the
    limit: an input's ``shape`` in the JSON (or in the JSON header, before the binary part)."""
    if header_length is not None and header_length.isdigit() and int(header_length) <= len(prefix):
        _check_declared_rows(_inputs(decode_object(prefix[:int(header_length)])), limit)
        return
    for i, match in enumerate(_SHAPE_KEY.finditer(prefix)):
        if i == 16:
            break
        rows = int(match.group(1))
        if rows <= limit.rows:
            continue
        where = json_scan.count(prefix[:match.start() + 1], prefix=True)
        if where is not None and where.depth == 3 and where.last_field == "inputs":  # an input's own shape
            raise InvalidInput(f"an input's shape declares {rows} rows; the limit is {limit.rows} rows per "
                               f"request ({limit.setting}): split the batch", limit=limit.rows)


def _check_declared_rows(raw_inputs: list[Any], limit: RowLimit) -> None:
    """Every layout puts the rows first in the shape: refuse a request over the limit before any array is built
    or any binary data is read."""
    for i, raw in enumerate(raw_inputs):
        shape = raw.get("shape") if isinstance(raw, dict) else None
        if isinstance(shape, list) and shape and type(shape[0]) is int and shape[0] > limit.rows:
            name = raw.get("name")
            which = f"input {quoted(name)}" if isinstance(name, str) else f"inputs[{i}]"
            raise InvalidInput(f"{which} has {shape[0]} rows; the limit is {limit.rows} rows per request "
                               f"({limit.setting}): split the batch", limit=limit.rows)


def decode_infer_request(body: bytes, header_length: str | None, limit: RowLimit | None = None) -> InferRequest:
    """An inference request: JSON, or a JSON header of ``header_length`` bytes followed by binary tensors. With a
    ``limit``, a request with more rows is refused before its arrays are built (a JSON one before it is parsed)."""
    header, binary = split_body(body, header_length)
    if limit is not None:
        check_json_size(header, limit)
    payload = decode_object(header)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string; got {type(request_id).__name__}")
    binary_output = parameters(payload.get("parameters"), "the request").get("binary_data_output") is True
    raw_inputs = _inputs(payload)
    if limit is not None:
        _check_declared_rows(raw_inputs, limit)
    reader = BinaryReader(binary) if binary is not None else None
    inputs = [_decode_input(i, raw, reader) for i, raw in enumerate(raw_inputs)]
    if reader is not None:
        reader.check_consumed()
    return InferRequest(request_id, inputs, _requested_outputs(payload.get("outputs"), binary_output),
                        binary_output)


def _inputs(payload: dict[str, Any]) -> list[Any]:
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request has no 'inputs': send a list such as "
                           '[{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": [...]}]')
    return raw_inputs


def _decode_input(i: int, raw: Any, reader: BinaryReader | None) -> Tensor:
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{i}] must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{i}] has no 'name' (a string)")
    datatype = check_datatype(name, raw.get("datatype"))
    shape, count = check_shape(name, raw.get("shape"))
    size = parameters(raw.get("parameters"), f"input {quoted(name)}").get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise InvalidInput(f"input {quoted(name)} has no 'data' (nor a binary_data_size parameter)")
        return from_json(name, datatype, shape, count, raw["data"])
    if type(size) is not int or size < 0:
        raise InvalidInput(f"input {quoted(name)}: binary_data_size must be a non-negative integer; got {quoted(size)}")
    if "data" in raw:
        raise InvalidInput(f"input {quoted(name)} has both 'data' and a binary_data_size parameter; send one of them")
    if reader is None:
        raise InvalidInput(f"input {quoted(name)} has a binary_data_size parameter but the request has no "
                           "Inference-Header-Content-Length header")
    return from_binary(name, datatype, shape, count, reader.take(name, size))


def _requested_outputs(raw: Any, binary_output: bool) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput(f"'outputs' must be a list of {{\"name\": ...}} objects; got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{i}] must be an object with a 'name'")
        binary = parameters(item.get("parameters"), f"output {quoted(item['name'])}").get("binary_data")
        out.append(RequestedOutput(item["name"], binary if isinstance(binary, bool) else binary_output))
    return out


# -- what a model shows -------------------------------------------------------------------------------------

class Signature:
    """One model as the protocol shows it (metadata, input and output tensors); built once per model."""

    def __init__(self, model: Model) -> None:
        manifest = model.manifest
        self.model = model
        self.outputs = {o.name: OutputSpec(o.name, o.role, datatype_for(o.dtype), list(o.shape))
                        for o in manifest.outputs}
        numeric_type = datatype_for(manifest.input.dtype) if manifest.input is not None else "FP32"
        self.input_names = ModelTensors(manifest.input.name if manifest.input is not None else None,
                                        manifest.categorical_input.name if manifest.categorical_input else None)
        inputs = []
        for spec, kind in ((manifest.input, "numeric"), (manifest.categorical_input, "categorical")):
            if spec is not None:
                inputs.append({"name": spec.name, "datatype": datatype_for(spec.dtype),
                               "shape": [-1, len(manifest.features_of(kind))]})
        metadata: dict[str, Any] = {
            "name": model.name,
            "versions": [model.version],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": [-1 if d is None else d for d in o.shape]}
                        for o in self.outputs.values()],
            # tabserve's own fields: the one-input-per-feature alternative, the task and the class order.
            "features": [{"name": f.name, "datatype": BYTES if f.kind == "categorical" else numeric_type,
                          "shape": [-1]} for f in manifest.features],
            "task": manifest.task,
        }
        if model.classes is not None:
            metadata["classes"] = model.classes
        self.metadata = metadata
        self.metadata_json = orjson.dumps(metadata)

    def select_outputs(self, request: InferRequest) -> list[tuple[OutputSpec, bool]]:
        """The outputs to send and whether each goes as binary data; checked before the model runs."""
        if request.outputs is None:
            return [(spec, request.binary_output) for spec in self.outputs.values()]
        selected = []
        for wanted in request.outputs:
            spec = self.outputs.get(wanted.name)
            if spec is None:
                raise InvalidInput(f"unknown output {quoted(wanted.name)}; the model's outputs are: "
                                   f"{', '.join(self.outputs)}")
            selected.append((spec, wanted.binary))
        return selected


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "tabserve", "version": version, "extensions": list(EXTENSIONS)}


# -- responses ------------------------------------------------------------------------------------------------

def encode_infer_response(model: Model, request: InferRequest, outputs: list[tuple[OutputSpec, bool]],
                          pred: Prediction, warnings: list[str]) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON header when binary outputs follow it."""
    rows = int(pred.values.shape[0])
    entries = []
    raws = []
    for spec, binary in outputs:
        arr = pred.probabilities if spec.role == "probabilities" else pred.values
        if spec.role in _SCORE_COLUMNS:  # an anomaly model: score_samples and decision_function, [N] each
            assert pred.probabilities is not None
            arr = np.ascontiguousarray(pred.probabilities[:, _SCORE_COLUMNS[spec.role]])
        assert arr is not None
        shape = [rows if d is None else d for d in spec.shape]
        if math.prod(shape) != arr.size:
            shape = list(arr.shape)
        entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
        if binary:
            raw = to_binary(arr, spec.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        else:
            flat = arr.reshape(-1)
            entry["data"] = flat if flat.dtype.kind in "fiub" else flat.tolist()
        entries.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        body["id"] = request.id
    if warnings:
        # Parameter values are scalars in the protocol: the range warnings travel as one string.
        body["parameters"] = {"warnings": "; ".join(warnings)}
    if model.manifest.approximation is not None:  # never an approximate answer without saying so
        body.setdefault("parameters", {})["model_format"] = model_format(model)
    body["outputs"] = entries
    header = orjson.dumps(body, option=_DUMPS_OPTIONS)
    if not raws:
        return header, None
    return b"".join([header, *raws]), len(header)
