"""The Open Inference Protocol over gRPC as one more codec on the data plane (api/dataplane.py).

``ModelInfer`` arrives as raw bytes: the model it names is read from the first fields of the message (no parse
of its tensors on the event loop), the data plane selects the model, and ``decode`` parses the whole message,
inline or on a scoring thread as the plane decides for any large body. Tensors become the same ``Tensor``
objects REST v2 builds, so ``model_input`` checks them with the same messages; outputs are REST v2's own
encoding (``encode_infer_response`` with binary outputs), sliced into ``raw_output_contents`` or typed contents.

Output contents: raw when the request sent ``raw_input_contents`` (tritonclient always does), or asked for
binary data (``binary_data_output`` / an output's ``binary_data`` parameter, as over REST); typed otherwise.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response
from starlette.types import Scope

from tabserve.api.codecs import V2Signatures
from tabserve.api.dataplane import Decoded
from tabserve.api.errors import FAULTS, MAX_MESSAGE_CHARS, RETRY_AFTER_SECONDS, V2_STATUS, status_for
from tabserve.core.model import Model, Prediction
from tabserve.core.quoting import quoted, shortened
from tabserve.errors import InvalidInput, RateLimited, TabserveError
from tabserve.grpc import inference_pb2 as pb
from tabserve.protocol import v2
from tabserve.protocol.tensors import (
    BYTES,
    DATATYPES,
    Tensor,
    check_datatype,
    check_shape,
    from_binary,
    to_binary,
)
from tabserve.protocol.v2_inputs import model_input

# The typed-contents field of each datatype, and the numpy type of its values (FP16 travels raw only).
CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_), "INT8": ("int_contents", np.int32), "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32), "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32), "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32), "FP64": ("fp64_contents", np.float64), BYTES: ("bytes_contents", None),
}


# -- which model a request names, before it is parsed ---------------------------------------------------------

def infer_target(raw: bytes) -> tuple[str, str]:
    """``model_name`` and ``model_version`` of a serialized ``ModelInferRequest``: fields 1 and 2, which every
    protobuf encoder writes first. A message written in another order is parsed whole; ``decode`` then checks
    the two again."""
    name, version, pos, end = "", "", 0, len(raw)
    try:
        while pos < end and raw[pos] in (0x0A, 0x12):  # field 1 or 2, length-delimited
            tag = raw[pos]
            size, pos = _varint(raw, pos + 1)
            text = raw[pos:pos + size].decode()
            pos += size
            if tag == 0x0A:
                name = text
            else:
                version = text
        if pos >= end or (raw[pos] >> 3) > 2:
            return name, version
    except (IndexError, UnicodeDecodeError):
        pass
    request = _parse(raw)
    return request.model_name, request.model_version


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _parse(raw: bytes) -> pb.ModelInferRequest:
    try:
        return pb.ModelInferRequest.FromString(raw)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, and upb's RuntimeError on some inputs
        raise InvalidInput(f"the request is not a serialized inference.ModelInferRequest: {exc}") from None


_FP64 = np.dtype("<f8")


@functools.cache
def _doubles(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}d")


# -- tensors --------------------------------------------------------------------------------------------------

def parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def decode_request(raw: bytes) -> tuple[pb.ModelInferRequest, v2.InferRequest, bool]:
    """The parsed message, its inputs as REST v2's ``InferRequest``, and whether outputs go raw."""
    message = _parse(raw)
    request, binary = request_of(message)
    return message, request, binary


def request_of(message: pb.ModelInferRequest) -> tuple[v2.InferRequest, bool]:
    if not message.inputs:
        raise InvalidInput("the request has no inputs: add an InferInputTensor per model input (name, datatype, "
                           "shape and contents or raw_input_contents)")
    raws = message.raw_input_contents
    if raws and len(raws) != len(message.inputs):
        raise InvalidInput(f"the request has {len(message.inputs)} inputs but {len(raws)} raw_input_contents; "
                           "send one raw content per input, in input order, or typed contents for all")
    inputs = [_input(t, raws[i] if raws else None) for i, t in enumerate(message.inputs)]
    params = {k: parameter(v) for k, v in message.parameters.items()}
    binary = bool(raws) or params.get("binary_data_output") is True
    requested = None
    if message.outputs:
        requested = []
        for o in message.outputs:
            flag = parameter(o.parameters["binary_data"]) if "binary_data" in o.parameters else None
            requested.append(v2.RequestedOutput(o.name, flag if isinstance(flag, bool) else binary))
    return v2.InferRequest(message.id or None, inputs, requested, binary), binary


def _input(t: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name = t.name
    if not name:
        raise InvalidInput("an input has no name; name each input after a model input or a feature")
    datatype = check_datatype(name, t.datatype)
    shape, count = check_shape(name, list(t.shape))
    if raw is not None:
        if t.HasField("contents") and t.contents.ListFields():
            raise InvalidInput(f"input {quoted(name)} has both contents and raw_input_contents; send one of them")
        return from_binary(name, datatype, shape, count, memoryview(raw))
    if datatype not in CONTENTS:
        raise InvalidInput(f"input {quoted(name)} is {datatype}, which has no typed contents: send it in "
                           "raw_input_contents")
    field, dtype = CONTENTS[datatype]
    values = getattr(t.contents, field)
    if len(values) != count:
        sent = [f.name for f, _ in t.contents.ListFields() if f.name != field]
        where = f" (its values are in {', '.join(sent)})" if sent else ""
        raise InvalidInput(f"input {quoted(name)}: shape {shape} holds {count} elements but {field} has "
                           f"{len(values)}{where}; a {datatype} input sends its values in {field}")
    if dtype is not None:
        return Tensor(name, datatype, shape, np.array(values, dtype=dtype).reshape(shape))
    arr = np.empty(count, dtype=object)
    for i, v in enumerate(values):
        try:
            arr[i] = v.decode()
        except UnicodeDecodeError:
            raise InvalidInput(f"input {quoted(name)}: BYTES element {i} is not UTF-8 text") from None
    return Tensor(name, datatype, shape, arr.reshape(shape))


def encode_response(model: Model, request: v2.InferRequest, outputs: list[tuple[v2.OutputSpec, bool]],
                    pred: Prediction, warnings: list[str]) -> pb.ModelInferResponse:
    """REST v2's response with every output as binary data, moved into the protobuf message."""
    if model.manifest.approximation is None and all(binary and spec.role in _DIRECT for spec, binary in outputs):
        return _raw_response(model, request, outputs, pred, warnings)
    body, header_length = v2.encode_infer_response(model, request, [(spec, True) for spec, _ in outputs], pred,
                                                   warnings)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
    for key, value in header.get("parameters", {}).items():  # range warnings; an approximate model's format
        response.parameters[key].string_param = value
    raw_all = all(binary for _, binary in outputs)
    pos = header_length
    for entry in header["outputs"]:
        size = entry["parameters"]["binary_data_size"]
        raw = body[pos:pos + size]
        pos += size
        out = response.outputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
        if raw_all:
            response.raw_output_contents.append(raw)
        else:  # raw_output_contents covers every output or none: a mix goes typed
            _typed(out, entry, raw)
    return response


# Outputs that are a Prediction's array as it is (an anomaly model's scores are columns: the long way).
_DIRECT = frozenset({"prediction", "label", "probabilities"})


def _raw_response(model: Model, request: v2.InferRequest, outputs: list[tuple[v2.OutputSpec, bool]],
                  pred: Prediction, warnings: list[str]) -> pb.ModelInferResponse:
    """``encode_infer_response``'s outputs, all raw, straight into the message (no JSON header to write and
    parse again): the same shapes and bytes."""
    rows = int(pred.values.shape[0])
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
    if warnings:
        response.parameters["warnings"].string_param = "; ".join(warnings)
    for spec, _ in outputs:
        arr = pred.probabilities if spec.role == "probabilities" else pred.values
        assert arr is not None
        shape = [rows if d is None else d for d in spec.shape]
        if math.prod(shape) != arr.size:
            shape = list(arr.shape)
        response.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
        response.raw_output_contents.append(to_binary(arr, spec.datatype))
    return response


def _typed(out: pb.ModelInferResponse.InferOutputTensor, entry: dict[str, Any], raw: bytes) -> None:
    datatype = entry["datatype"]
    count = int(np.prod(entry["shape"])) if entry["shape"] else 1
    field, _ = CONTENTS.get(datatype, (None, None))
    if field is None:  # FP16: no typed field
        raise InvalidInput(f"output {quoted(entry['name'])} is {datatype}, which has no typed contents: ask for "
                           "binary_data_output")
    target = getattr(out.contents, field)
    if datatype == BYTES:
        target.extend(s.encode() for s in from_binary(entry["name"], BYTES, [count], count, memoryview(raw)).array)
    else:
        target.extend(np.frombuffer(raw, dtype=DATATYPES[datatype]).tolist())


# -- errors ---------------------------------------------------------------------------------------------------

# HTTP status of the v2 mapping (api/errors.py, the one place domain errors are classified) -> gRPC status code.
GRPC_CODES: dict[int, str] = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                              404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
                              422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                              503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


# The details travel in the grpc-message trailer, and clients refuse metadata over 8 KiB by default (a
# message listing thousands of features would arrive as a transport error instead of the message).
MAX_DETAILS_CHARS = min(MAX_MESSAGE_CHARS, 4096)


class Serialized(Response):
    """A serialized ModelInferResponse, as the data plane hands it back: no HTTP headers to build."""

    def __init__(self, body: bytes) -> None:  # not super().__init__: it would build headers for nothing
        self.body = body
        self.status_code = 200


class GrpcError(Response):
    """What ``error`` answers: the gRPC status (as its name), its details and trailing metadata; ``status_code``
    keeps the HTTP status REST would have answered (access log, metrics)."""

    def __init__(self, http_status: int, code: str, details: str, trailers: list[tuple[str, str]]) -> None:
        super().__init__(b"", status_code=http_status)
        self.code = code
        self.details = details
        self.trailers = trailers


def grpc_error(exc: TabserveError, request_id: str | None) -> GrpcError:
    """INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE... as REST v2 classifies ``exc``; ``retry-after`` (seconds) in
    the trailing metadata where REST sends Retry-After; a fault of ours names the request id."""
    status = status_for(exc, V2_STATUS)
    code = GRPC_CODES.get(status, "INTERNAL")
    details = shortened(exc.message, MAX_DETAILS_CHARS)
    trailers: list[tuple[str, str]] = []
    if status in FAULTS or code == "INTERNAL":
        details += f" (request id {request_id})" if request_id else ""
    if isinstance(exc, RateLimited):
        trailers.append(("retry-after", str(exc.context.get("reset", 1))))
    else:
        retry = next((RETRY_AFTER_SECONDS[c] for c in type(exc).__mro__ if c in RETRY_AFTER_SECONDS), None)
        if retry:
            trailers.append(("retry-after", retry))
    if request_id:
        trailers.append(("x-request-id", request_id))
    return GrpcError(status, code, details, trailers)


# -- the codec ------------------------------------------------------------------------------------------------

class GrpcCodec(V2Signatures):
    """``ModelInfer`` on the data plane: bytes in, serialized ``ModelInferResponse`` out."""

    protocol = "grpc"
    charges_rows = True

    def peek(self, scope: Scope, prefix: bytes) -> None:
        return None  # the message arrives whole (gRPC's max_receive_message_length bounds it)

    def decode(self, model: Model, body: bytes, scope: Scope) -> Decoded:
        message = _parse(body)
        target = scope.get("tabserve.grpc.target")
        if target is not None and target != (message.model_name, message.model_version):
            raise InvalidInput("model_name/model_version appear twice in the request with different values")
        sig = self.signature(model)
        one = self._one_row(model, sig, message)
        if one is not None:
            return one
        request, _ = request_of(message)
        outputs = sig.select_outputs(request)
        limit = self.options.max_batch_rows
        x = model_input(model.schema, sig.input_names, request.inputs, max_rows=limit)
        return Decoded(x, model.schema.check_ranges(x, self.options.range_policy, single=False), request, outputs)

    def _one_row(self, model: Model, sig: v2.Signature, message: pb.ModelInferRequest) -> Decoded | None:
        """The usual call (tritonclient's, the harness's): one row of FP64 features in ``raw_input_contents``,
        every output raw. What the long way would build, without its tensors, lists and dtype set-up: a finite
        row is the float64 view of the bytes; anything else (a NaN, an infinity, another shape or datatype,
        requested outputs, typed contents) takes the long way and its messages. None: take the long way."""
        schema = model.schema
        name = sig.input_names.numeric
        if (schema.categorical_cols or schema.dtype != np.float64 or sig.input_names.categorical is not None
                or message.outputs or len(message.raw_input_contents) != 1 or len(message.inputs) != 1):
            return None
        tensor = message.inputs[0]
        count = schema.count
        raw = message.raw_input_contents[0]
        if (tensor.name != name or tensor.datatype != "FP64" or len(raw) != 8 * count or tensor.HasField("contents")
                or tensor.shape != [1, count]):
            return None
        if not math.isfinite(sum(_doubles(count).unpack(raw))):  # NaN, infinity: as_input's message or missing
            return None
        x = np.frombuffer(raw, dtype=_FP64).reshape(1, count)
        request = v2.InferRequest(message.id or None, [Tensor(name, "FP64", [1, count], x)], None, True)
        return Decoded(x, schema.check_ranges(x, self.options.range_policy, single=False), request,
                       sig.select_outputs(request))

    def encode(self, model: Model, decoded: Decoded, pred: Prediction, t0: float, scope: Scope) -> Response:
        message = encode_response(model, decoded.request, decoded.outputs, pred, decoded.warnings)
        return Serialized(message.SerializeToString())

    def error(self, exc: TabserveError, request_id: str | None) -> Response:
        return grpc_error(exc, request_id)
