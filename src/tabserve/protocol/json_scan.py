"""A JSON body's size in rows and values, counted on its raw bytes before it is parsed.

Parsing is what a hostile batch costs: orjson builds a Python object per array, object and number, so a 12 MB body
of 10^6 rows of 5 numbers takes 220 ms to parse with the garbage collector off and 600-1300 ms with it on (every
new list is tracked), holds the GIL all along (the event loop waits too, even when it runs in a worker thread) and
peaks at 250 MB. Counting the brackets and commas that lie outside strings, in numpy over 256 KiB slices, takes
28 ms and 3 MB for that body (numpy releasing the GIL between and within its steps) and proves such a body too
large before any object is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tabserve.errors import InvalidInput

_SLICE = 1 << 18  # 256 KiB: each numpy step that holds the GIL stays well under a millisecond
_SMALL = 1 << 16  # 64 KiB: counted with bytes.count, three passes of a few microseconds
_OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT, _QUOTE, _COMMA = b'[{]}",'
_WHITESPACE = b" \t\r\n"
_MAX_KEYED = 64  # top-level containers whose keys are looked up (a real request has one to three)
MAX_DEPTH = 1024  # orjson's: it refuses deeper nesting


@dataclass(frozen=True, slots=True)
class JsonCounts:
    """What a JSON object's raw bytes hold, outside strings."""

    containers: int  # arrays and objects, the top-level object included
    commas: int  # one fewer than the values, roughly: every array element and object member but the first
    items: dict[str, int]  # top-level field -> the arrays and objects directly inside its value (its rows)
    depth: int = 0  # how deeply nested the end is (a prefix's: 3 inside an object of a top-level field's list)
    last_field: str | None = None  # the top-level field whose array or object opened last


def upper_bounds(body: bytes) -> tuple[int, int]:
    """At least as many arrays and objects, and as many commas, as ``body`` holds (those inside strings count too):
    a count that lets a body that cannot be too large skip the scan. numpy over slices, not ``bytes.count``, which
    holds the GIL for 5 ms a pass over 12 MB; below ``_SMALL`` bytes ``bytes.count`` is the cheaper (numpy's
    set-up costs more than the count: 14% of a one-row request, measured)."""
    if len(body) <= _SMALL:
        return body.count(b"[") + body.count(b"{"), body.count(b",")
    raw = np.frombuffer(body, dtype=np.uint8)
    containers = commas = 0
    for offset in range(0, len(raw), _SLICE):
        chunk = raw[offset:offset + _SLICE]
        containers += int(np.count_nonzero((chunk == _OPEN_ARRAY) | (chunk == _OPEN_OBJECT)))
        commas += int(np.count_nonzero(chunk == _COMMA))
    return containers, commas


def count(body: bytes, *, prefix: bool = False) -> JsonCounts | None:
    """The counts of a JSON object's bytes; ``None`` when they are not one well-nested object (the parser then
    says what is wrong). Nesting deeper than the parser reads is refused here, as the parser would. With
    ``prefix``, ``body`` is the start of one, still arriving: what it holds so far."""
    original = body
    if b"\\" in body:
        # Escaped backslashes first, then escaped quotes: what is left of '"' delimits strings. The same length
        # keeps every position; only a string's contents change, and strings are not counted.
        body = body.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    start = len(body) - len(body.lstrip(_WHITESPACE))
    if body[start:start + 1] != b"{":
        return None
    raw = np.frombuffer(body, dtype=np.uint8)
    depth = in_string = 0  # after the previous slice
    containers = commas = closings = tops = 0
    keyed: list[int] = []  # where each top-level container opens, while there are few
    rows_per_top: list[int] = []  # the arrays and objects directly inside each of them
    for offset in range(0, len(raw), _SLICE):
        chunk = raw[offset:offset + _SLICE]
        opening = (chunk == _OPEN_ARRAY) | (chunk == _OPEN_OBJECT)
        where = np.flatnonzero(opening | (chunk == _CLOSE_ARRAY) | (chunk == _CLOSE_OBJECT))
        step = np.where(opening[where], np.int8(1), np.int8(-1))
        quote_at = np.flatnonzero(chunk == _QUOTE)
        if in_string or len(quote_at):
            # A character lies in a string when an odd number of quotes came before it.
            outside = ((np.searchsorted(quote_at, where) + in_string) & 1) == 0
            where, step = where[outside], step[outside]
            comma_at = np.flatnonzero(chunk == _COMMA)
            commas += int(np.count_nonzero(((np.searchsorted(quote_at, comma_at) + in_string) & 1) == 0))
            in_string = (in_string + len(quote_at)) & 1
        else:
            commas += int(np.count_nonzero(chunk == _COMMA))
        if not len(where):
            continue
        level = np.cumsum(step, dtype=np.int32)
        level += depth
        if int(level.min()) < 0:
            return None
        deepest = int(level.max())
        if deepest > MAX_DEPTH:
            raise InvalidInput(f"the request body is not valid JSON: depth limit exceeded (arrays and objects "
                               f"nested {deepest} deep at least; the limit is {MAX_DEPTH})")
        opens = step == 1
        containers += int(np.count_nonzero(opens))
        closings += int(np.count_nonzero(~opens & (level == 0)))
        top_opens = opens & (level == 2)  # the value of a top-level field
        found = where[top_opens]
        if tops + len(found) <= _MAX_KEYED:
            keyed.extend((found + offset).tolist())
            rows = opens & (level == 3)
            if not len(found):  # the usual slice: all inside the field opened before
                if tops:
                    rows_per_top[-1] += int(np.count_nonzero(rows))
            else:
                top_index = np.cumsum(top_opens, dtype=np.int32)[rows] + (tops - 1)
                counts = np.bincount(top_index[top_index >= 0], minlength=tops + len(found)).tolist()
                rows_per_top.extend([0] * len(found))
                rows_per_top = [a + b for a, b in zip(rows_per_top, counts, strict=True)]
        tops += len(found)
        depth = int(level[-1])
    if not prefix and (depth != 0 or in_string or closings != 1):  # one object, closed once
        return None
    items: dict[str, int] = {}
    key = None
    if tops <= _MAX_KEYED:
        for position, rows_inside in zip(keyed, rows_per_top, strict=True):
            key = _key_before(original, position)
            if key is not None:
                items[key] = rows_inside  # a repeated key: the last one wins, as it does in the parser
    return JsonCounts(containers, commas, items, depth, key)


def _key_before(body: bytes, position: int) -> str | None:
    """The plain (unescaped, ASCII) key of the member whose value opens at ``position``."""
    head = body[max(0, position - 256):position].rstrip(_WHITESPACE)
    if not head.endswith(b":"):
        return None
    head = head[:-1].rstrip(_WHITESPACE)
    if not head.endswith(b'"'):
        return None
    begin = head.rfind(b'"', 0, len(head) - 1)
    if begin < 0:
        return None
    key = head[begin + 1:-1]
    return key.decode("ascii") if key.isascii() and b"\\" not in key else None
