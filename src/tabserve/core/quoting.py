"""Quoting client input in error messages, bounded: a 10 MB key must not come back as a 20 MB error body."""

from __future__ import annotations

import reprlib

QUOTE_LIMIT = 64  # characters of a quoted value shown; enough to recognise a name, a value, a header

_repr = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 2, 4, 6, 6, 6
_repr.maxlong = _repr.maxother = QUOTE_LIMIT
_repr.maxstring = QUOTE_LIMIT + 2


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters and saying how long the value was:
    ``'aaaa…' (10485760 chars)``. Strings are sliced before ``repr`` so a huge one costs nothing to quote."""
    if isinstance(value, str | bytes):
        if len(value) <= limit:
            return repr(value)
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}… ({len(value)} {unit})"
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (a whole message or a context value), saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
