from __future__ import annotations

import struct

import numpy as np
import pytest

from tabserve.errors import InvalidInput
from tabserve.protocol.tensors import (
    BinaryReader,
    check_datatype,
    check_shape,
    datatype_for,
    from_binary,
    from_json,
    split_body,
    to_binary,
)


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"),
                                                 ("INT64", "<i8"), ("FP16", "<f2"), ("UINT8", "<u1")])
def test_binary_numbers_are_read_little_endian_into_numpy(datatype, dtype):
    values = np.arange(6).astype(dtype).reshape(2, 3)
    t = from_binary("x", datatype, [2, 3], 6, memoryview(values.tobytes()))
    assert t.array.dtype == np.dtype(dtype) and t.array.shape == (2, 3)
    np.testing.assert_array_equal(t.array, values)
    assert to_binary(t.array, datatype) == values.tobytes()


def test_binary_bool_is_one_byte_per_element():
    t = from_binary("flag", "BOOL", [3], 3, memoryview(b"\x01\x00\x01"))
    assert t.array.tolist() == [True, False, True]


def test_binary_size_must_match_the_shape_naming_both_counts():
    with pytest.raises(InvalidInput, match=r"input 'X': shape \[2, 5\] holds 10 elements \(40 bytes of FP32\) "
                                           r"but binary_data_size is 36 bytes \(9 elements\)"):
        from_binary("X", "FP32", [2, 5], 10, memoryview(bytes(36)))


def test_bytes_elements_have_a_four_byte_length_prefix_both_ways():
    raw = bytes_tensor(b"red", b"", "bl\u00fce".encode())
    t = from_binary("color", "BYTES", [3], 3, memoryview(raw))
    assert t.array.tolist() == ["red", "", "bl\u00fce"]
    assert to_binary(t.array, "BYTES") == raw
    assert to_binary(np.array(["a", "bc"], dtype=object), "BYTES") == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


@pytest.mark.parametrize(("raw", "count", "fragment"), [
    (bytes_tensor(b"red") + b"\x00" * 4, 3, "3 BYTES elements need at least 12 bytes but binary_data_size is 11"),
    (bytes_tensor(b"red", b"xyz"), 3, "ends after 2 of 3 elements"),
    (b"", 10 ** 15, "need at least 4000000000000000 bytes"),
    (struct.pack("<I", 9) + b"red", 1, "element 0 declares 9 bytes but only 3 are left"),
    (bytes_tensor(b"red") + b"xx", 1, "2 bytes follow its 1 BYTES elements"),
    (bytes_tensor(b"\xff"), 1, "element 0 is not UTF-8 text"),
])
def test_broken_bytes_tensors_are_explained(raw, count, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        from_binary("color", "BYTES", [count], count, memoryview(raw))


def test_json_data_may_be_flat_or_nested_row_major():
    flat = from_json("X", "FP32", [2, 2], 4, [1, 2, 3, 4])
    nested = from_json("X", "FP32", [2, 2], 4, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat.array, nested.array)
    assert flat.array.shape == (2, 2) and flat.is_numeric
    assert from_json("c", "BYTES", [2, 1], 2, [["a"], ["b"]]).array.tolist() == [["a"], ["b"]]


@pytest.mark.parametrize(("datatype", "shape", "data", "fragment"), [
    ("FP32", [2, 5], [0.1] * 9, r"input 'X': shape \[2, 5\] holds 10 elements but 'data' has 9"),
    ("FP32", [2, 2], [[1, 2], [3]], "not a regular nested list"),
    ("FP32", [1], "1.5", "'data' must be a list"),
    ("INT64", [2], [1, 2.5], "is INT64 but its data holds non-integer numbers"),
    ("BOOL", [2], [1, 0], "is BOOL but its data holds numbers"),
    ("BYTES", [2], ["a", 1], "input 'X' is BYTES: element 1 is 1; strings are required"),
])
def test_json_data_that_does_not_fit_is_refused(datatype, shape, data, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        from_json("X", datatype, shape, int(np.prod(shape)), data)


def test_strings_in_numeric_data_are_kept_for_the_schema_to_explain():
    t = from_json("X", "FP32", [2], 2, [1.5, "abc"])
    assert not t.is_numeric and t.sent == [1.5, "abc"]


def test_datatypes_and_shapes_are_checked():
    assert check_datatype("X", "FP64") == "FP64"
    with pytest.raises(InvalidInput, match="unknown datatype 'FLOAT'; use one of BOOL, .*FP32, FP64, BYTES"):
        check_datatype("X", "FLOAT")
    assert check_shape("X", [3, 5]) == ([3, 5], 15)
    for bad in ([-1, 5], "3,5", [1.0, 5], [True]):
        with pytest.raises(InvalidInput, match="'shape' must be a list of non-negative integers"):
            check_shape("X", bad)
    assert [datatype_for(n) for n in ("float32", "float64", "int64", "bool", "str")] == \
        ["FP32", "FP64", "INT64", "BOOL", "BYTES"]


def test_the_header_length_splits_json_from_binary():
    header, rest = split_body(b'{"a":1}\x01\x02', "7")
    assert bytes(header) == b'{"a":1}' and bytes(rest) == b"\x01\x02"
    assert split_body(b"{}", None) == (b"{}", None)
    for bad in ("-1", "abc", "1e3", "\u0661"):
        with pytest.raises(InvalidInput, match="invalid Inference-Header-Content-Length header"):
            split_body(b"{}", bad)
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length is 99 but the body has only 2 bytes"):
        split_body(b"{}", "99")


def test_the_binary_reader_hands_out_consecutive_slices_and_wants_them_all_used():
    reader = BinaryReader(memoryview(b"abcdef"))
    assert bytes(reader.take("a", 2)) == b"ab" and bytes(reader.take("b", 3)) == b"cde"
    with pytest.raises(InvalidInput, match="1 bytes follow the binary data of the inputs"):
        reader.check_consumed()
    with pytest.raises(InvalidInput, match="input 'c': binary_data_size is 4 bytes but only 1 bytes"):
        reader.take("c", 4)
