"""The correctness check run before any row is timed: is scikit-learn's prediction in the answer?"""

from __future__ import annotations

import json


def numeric_arrays(value: object) -> list[list[float]]:
    """Every JSON sub-value that is a number or an (arbitrarily nested) list of numbers, flattened."""
    found: list[list[float]] = []

    def flat(v: object) -> list[float] | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, int | float):
            return [float(v)]
        if isinstance(v, list):
            out: list[float] = []
            for item in v:
                part = flat(item)
                if part is None:
                    return None
                out.extend(part)
            return out
        return None

    def walk(v: object) -> None:
        numbers = flat(v)
        if numbers is not None:
            found.append(numbers)
        elif isinstance(v, dict | list):
            for item in v.values() if isinstance(v, dict) else v:
                walk(item)

    walk(value)
    return found


def check(body: bytes, expected: list[float]) -> tuple[bool, str]:
    """Correct when some numeric array of the answer equals scikit-learn's predictions within
    1e-3 + 1e-4·|y| (the float32 graph's rounding; tabserve's exact graph is far closer)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False, f"not JSON: {body[:120]!r}"
    best: tuple[bool, float] | None = None
    for candidate in numeric_arrays(answer):
        if len(candidate) == len(expected):
            err = max(abs(a - e) for a, e in zip(candidate, expected, strict=True))
            good = all(abs(a - e) <= 1e-3 + 1e-4 * abs(e) for a, e in zip(candidate, expected, strict=True))
            if best is None or (good, -err) > (best[0], -best[1]):
                best = (good, err)
    if best is None:
        return False, f"no array of {len(expected)} numbers in {body[:120]!r}"
    return best[0], f"max abs error {best[1]:.2g} over {len(expected)} rows"
