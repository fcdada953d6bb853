"""What is wrong with one JSON value where a number is expected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tabserve.core.quoting import quoted


def value_problem(v: Any) -> str | None:
    if v is None:
        return "the value is null; a number is required (missing values are not accepted by this model)"
    if isinstance(v, str):
        return f"{quoted(v)} is a string; a number is required"
    if isinstance(v, bool | int | float):
        return None
    if isinstance(v, Sequence | dict):
        return f"the value is a nested {type(v).__name__}; a number is required"
    return f"{quoted(v)} is not a number"
