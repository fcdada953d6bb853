"""Open Inference Protocol tensors: datatypes, JSON ``data`` and Triton's binary tensor data extension.

A binary tensor is raw row-major little-endian bytes; a BYTES element is a 4-byte little-endian length followed by
that many bytes. Binary data is read straight into numpy buffers (``np.frombuffer``), never through Python lists.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.quoting import quoted
from tabserve.errors import InvalidInput

HEADER_LENGTH = "inference-header-content-length"

BYTES = "BYTES"
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    BYTES: np.dtype(object),
}
_BY_NUMPY_NAME = {dt.name: name for name, dt in DATATYPES.items() if name != BYTES}
_INTEGER_TYPES = frozenset(n for n, dt in DATATYPES.items() if dt.kind in "iu")
_LENGTH = struct.Struct("<I")


def datatype_for(numpy_name: str) -> str:
    """The protocol datatype of a manifest dtype (``float32`` -> ``FP32``; ``str`` and ``object`` -> ``BYTES``)."""
    return _BY_NUMPY_NAME.get(numpy_name, BYTES)


@dataclass(slots=True)
class Tensor:
    """One decoded request input: ``array`` has ``shape``; ``sent`` is its JSON ``data`` as sent, if any, kept
    to explain a value that is not a number."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray
    sent: list[Any] | None = None

    @property
    def is_numeric(self) -> bool:
        return self.array.dtype.kind in "fiub"


def check_datatype(name: str, datatype: Any) -> str:
    if datatype not in DATATYPES:
        raise InvalidInput(f"input {quoted(name)}: unknown datatype {quoted(datatype)}; use one of {', '.join(DATATYPES)}")
    return datatype


def check_shape(name: str, shape: Any) -> tuple[list[int], int]:
    """The shape and its element count."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"input {quoted(name)}: 'shape' must be a list of non-negative integers, such as [1, 5]; "
                           f"got {quoted(shape)}")
    return shape, math.prod(shape)


# -- JSON data ------------------------------------------------------------------------------------------------

def from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> Tensor:
    """``data`` as sent, flat or nested row-major, checked against the shape's element count."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {quoted(name)}: 'data' must be a list (flat, or nested row-major); "
                           f"got {type(data).__name__}")
    if datatype == BYTES:
        flat = _flatten(data)
        _check_count(name, shape, count, len(flat))
        for i, v in enumerate(flat):  # null: a missing value, which the schema accepts or refuses by feature
            if not isinstance(v, str) and v is not None:
                raise InvalidInput(f"input {quoted(name)} is BYTES: element {i} is {quoted(v)}; strings are required")
        arr = np.empty(count, dtype=object)
        arr[:] = flat
        return Tensor(name, datatype, shape, arr.reshape(shape), data)
    try:
        arr = np.array(data)
    except ValueError:  # ragged nesting, or a number next to a list
        raise InvalidInput(f"input {quoted(name)}: 'data' is not a regular nested list; send {count} values for shape "
                           f"{shape}, flat or nested row-major") from None
    _check_count(name, shape, count, arr.size)
    kind = arr.dtype.kind
    if datatype in _INTEGER_TYPES and kind == "f":
        raise InvalidInput(f"input {quoted(name)} is {datatype} but its data holds non-integer numbers; "
                           "declare FP32 or FP64")
    if datatype == "BOOL" and kind in "iuf":
        raise InvalidInput(f"input {quoted(name)} is BOOL but its data holds numbers; send true/false or declare "
                           "a numeric datatype")
    return Tensor(name, datatype, shape, arr.reshape(shape), data)


def flat_values(tensor: Tensor) -> list[Any]:
    """The tensor's values as sent, flat and row-major (the slow path that explains bad values)."""
    return _flatten(tensor.sent) if tensor.sent is not None else tensor.array.reshape(-1).tolist()


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        out.extend(_flatten(v) if isinstance(v, list) else (v,))
    return out


def _check_count(name: str, shape: list[int], expected: int, actual: int) -> None:
    if actual != expected:
        raise InvalidInput(f"input {quoted(name)}: shape {shape} holds {expected} elements but 'data' has {actual}")


# -- binary data ----------------------------------------------------------------------------------------------

def split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview | None]:
    """The JSON header and the binary part that follows it (``None`` without the header length)."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"invalid Inference-Header-Content-Length header {quoted(header_length)}: it must be the "
                           "byte length of the JSON part of the body, a non-negative integer")
    if len(text) > 18:  # larger than any body; int() of over 4,300 digits would raise (a 500)
        raise InvalidInput(f"Inference-Header-Content-Length has {len(text)} digits but the body has only "
                           f"{len(body)} bytes")
    size = int(text)
    if size > len(body):
        raise InvalidInput(f"Inference-Header-Content-Length is {size} but the body has only {len(body)} bytes")
    view = memoryview(body)
    return view[:size], view[size:]


class BinaryReader:
    """Hands out consecutive slices of a request's binary part: one per binary input, in input order."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0

    def take(self, name: str, size: int) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise InvalidInput(f"input {quoted(name)}: binary_data_size is {size} bytes but only "
                               f"{len(self.data) - self.offset} bytes of binary data are left for it")
        view = self.data[self.offset:end]
        self.offset = end
        return view

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise InvalidInput(f"{left} bytes follow the binary data of the inputs ({self.offset} bytes in all): "
                               "Inference-Header-Content-Length or a binary_data_size is wrong")


def from_binary(name: str, datatype: str, shape: list[int], count: int, data: memoryview) -> Tensor:
    if datatype == BYTES:
        return Tensor(name, datatype, shape, _decode_bytes(name, count, data).reshape(shape))
    dtype = DATATYPES[datatype]
    if len(data) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {quoted(name)}: shape {shape} holds {count} elements ({count * dtype.itemsize} bytes of {datatype}) "
            f"but binary_data_size is {len(data)} bytes ({len(data) / dtype.itemsize:g} elements)")
    return Tensor(name, datatype, shape, np.frombuffer(data, dtype=dtype, count=count).reshape(shape))


def _decode_bytes(name: str, count: int, data: memoryview) -> np.ndarray:
    end = len(data)
    if count * 4 > end:  # checked before allocating: each element has at least its 4-byte length
        raise InvalidInput(f"input {quoted(name)}: {count} BYTES elements need at least {count * 4} bytes but "
                           f"binary_data_size is {end}")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > end:
            raise InvalidInput(f"input {quoted(name)}: the BYTES data ends after {i} of {count} elements")
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise InvalidInput(f"input {quoted(name)}: BYTES element {i} declares {length} bytes but only "
                               f"{end - pos} are left")
        try:
            out[i] = str(data[pos:pos + length], "utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {quoted(name)}: BYTES element {i} is not UTF-8 text") from None
        pos += length
    if pos != end:
        raise InvalidInput(f"input {quoted(name)}: {end - pos} bytes follow its {count} BYTES elements")
    return out


def to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype != BYTES:
        return np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
    parts = []
    for v in arr.reshape(-1):
        raw = v if isinstance(v, bytes) else str(v).encode()
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
