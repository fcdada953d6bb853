"""A monotone per-column map before trees, folded into their split thresholds.

A scaler computes ``z = (x - mean) / scale`` per column, with two roundings; each is monotone, so
``{x : forward(x) <= d}`` is exactly the doubles up to some ``e``, and a split ``z <= d`` on the scaled
value is the split ``x <= e`` on the raw one. The ensemble can then read the scaler's input, and the
scaler's nodes go unused (``Graph.model`` drops them): one row runs two nodes fewer. ``e`` is found by a
binary search over the doubles in order, evaluating ``forward`` with numpy's own operations, so no
rounding has to be reasoned about. LightGBM's ``|x| <= 1e-35`` read as 0 is monotone too (``Affine.snap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Affine

if TYPE_CHECKING:
    from tabserve.training.convert.trees import Tree


def unscale(affine: Affine, trees: Sequence[Tree]) -> list[Tree]:
    """The same trees on the scaler's input: a split ``z <= d`` on ``z = forward(x)`` becomes ``x <= e``,
    ``e`` the largest double with ``forward(e) <= d``. ``forward`` rounds twice (subtract, divide) but is
    monotone, so ``{x : forward(x) <= d}`` is exactly the doubles up to ``e``; NaN stays NaN."""
    features = np.concatenate([np.asarray(t.feature, np.int64)[t.splits] for t in trees])
    thresholds = np.concatenate([np.asarray(t.threshold, np.float64)[t.splits] for t in trees])
    moved = np.empty_like(thresholds)
    for f in np.unique(features):
        chosen = features == f
        distinct, where = np.unique(thresholds[chosen], return_inverse=True)
        moved[chosen] = _largest_mapped_at_most(affine, int(f), distinct)[where]
    out, start = [], 0
    for t in trees:
        threshold = np.array(t.threshold, dtype=np.float64)
        threshold[t.splits] = moved[start:start + len(t.splits)]
        start += len(t.splits)
        out.append(replace(t, threshold=threshold))
    return out


_SIGN = np.int64(-(2**63))


def _order(values: np.ndarray) -> np.ndarray:
    """Doubles -> int64 keys in the same order (-0.0 and 0.0 share key 0)."""
    bits = np.asarray(values, np.float64).view(np.int64)
    return np.where(bits >= 0, bits, _SIGN - bits)


def _unorder(keys: np.ndarray) -> np.ndarray:
    return np.where(keys >= 0, keys, _SIGN - keys).astype(np.int64).view(np.float64)


def _largest_mapped_at_most(affine: Affine, column: int, d: np.ndarray) -> np.ndarray:
    """Per ``d``: the largest double ``x`` with ``affine.forward(column, x) <= d`` (a binary search over
    the doubles in order; ``forward(-inf) = -inf`` satisfies every ``d``)."""
    if np.any(np.isnan(d)):
        raise ExportError("a split threshold is NaN")
    lo = np.full(d.shape, _order(np.array(-np.inf)))
    hi = np.full(d.shape, _order(np.array(np.inf)))
    done = affine.forward(column, np.full(d.shape, np.inf)) <= d
    while np.any(hi > lo + 1):
        mid = (lo & hi) + ((lo ^ hi) >> 1)  # floor((lo + hi) / 2) without overflow
        ok = affine.forward(column, _unorder(mid)) <= d
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return np.where(done, np.inf, _unorder(lo))


__all__ = ["unscale"]
