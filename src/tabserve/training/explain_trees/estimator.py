"""What every reader returns (``Estimator``) and the TreeSHAP node table the tree readers fill (``TreeTable``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.explain.artifact import Kind, Space
from tabserve.core.explain.ensemble import TreeEnsemble
from tabserve.core.manifest import Task
from tabserve.errors import ExportError

Raw = Callable[[Any, np.ndarray], np.ndarray]  # (final estimator, its columns) -> [rows, outputs]


class ExplainUnsupported(ExportError):
    """The model can be served but not explained (its type, or a step, is outside what TreeSHAP covers)."""


@dataclass(frozen=True, eq=False)
class Estimator:
    kind: Kind
    space: Space
    outputs: list[str]
    raw: Raw
    trees: TreeEnsemble | None = None
    linear: tuple[np.ndarray, np.ndarray] | None = None  # coef [K, C], intercept [K]


class TreeTable:
    """Collects trees (local child indices) into one ensemble with global node indices."""

    def __init__(self, width: int) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.outputs: list[int] = []
        self.count = 0
        self.width = width

    def add(self, feature: Any, threshold: Any, left: Any, right: Any, missing_left: Any, cover: Any, value: Any,
            output: int, zero_missing: Any = None) -> None:
        left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
        n = len(left)
        leaf = left < 0

        def shift(a: np.ndarray) -> np.ndarray:
            return np.where(leaf, -1, a + self.count)

        value = np.asarray(value, dtype=np.float64).reshape(n, -1)
        self.parts.append((np.where(leaf, -1, np.asarray(feature)), np.asarray(threshold, dtype=np.float64),
                           shift(left), shift(right), np.asarray(missing_left, dtype=bool),
                           np.zeros(n, bool) if zero_missing is None else np.asarray(zero_missing, dtype=bool),
                           np.asarray(cover, dtype=np.float64), value))
        self.outputs.append(output)
        self.count += n

    def ensemble(self, base: Sequence[float], n_columns: int, **flags: bool) -> TreeEnsemble:
        cat = [np.concatenate([p[i] for p in self.parts]) for i in range(8)]
        roots = np.cumsum([0] + [len(p[0]) for p in self.parts[:-1]])
        return TreeEnsemble(cat[0].astype(np.int32), cat[1], cat[2].astype(np.int32), cat[3].astype(np.int32),
                            cat[4], cat[5], cat[6], cat[7], roots.astype(np.int64),
                            np.array(self.outputs, dtype=np.int32), np.asarray(base, dtype=np.float64),
                            n_columns, **flags)


def labels(model: Any, task: Task, k: int) -> list[str]:
    """The names of the ``k`` explained outputs: the prediction, or the classes (a binary margin: the second)."""
    if task == "regression":
        return ["prediction"]
    classes = [str(c) for c in getattr(model, "classes_", range(max(k, 2)))]
    return classes[1:] if k == 1 else classes


def as_2d(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(len(arr), -1)
