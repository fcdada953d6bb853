"""How messages and the manifest name rows: as pandas numbers them, from 0, header excluded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

SHOWN = 5


def row_list(rows: Sequence[Any]) -> str:
    """``3, 17, 42, ...``: the first few row numbers of a longer list."""
    shown = ", ".join(str(int(r)) for r in rows[:SHOWN])
    return shown + (", ..." if len(rows) > SHOWN else "")


def name_list(names: Iterable[Any], limit: int = 20) -> str:
    """``'a', 'b', ... (31 in all)``: column names for a message."""
    names = [str(n) for n in names]
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
