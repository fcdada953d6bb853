"""The TreeSHAP and Saabas loops of ``treeshap`` compiled with numba (the ``[explain]`` extra).

Same arithmetic as ``treeshap.explain_numpy``, one tree at a time so that a tree's buffers stay in cache,
without the GIL (predictions keep their threads while an explanation runs). numba is imported and the
loops compiled on first use, never at import; compiled code is cached on disk when the package folder is
writable. Without numba, ``available()`` is False and the explainer uses the numpy version.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.explain.treeshap import Plan, prepare_rows

_LANES = 4
_lock = threading.Lock()
_kernels: dict[int, dict[str, Any]] = {}
_missing = False


def available() -> bool:
    return _load() is not None


def _load(lanes: int = _LANES) -> dict[str, Any] | None:
    global _missing
    kernels = _kernels.get(lanes)
    if kernels is not None or _missing:
        return kernels
    with _lock:
        if lanes not in _kernels and not _missing:
            try:
                import numba  # noqa: F401
            except ImportError:
                _missing = True
                return None
            _kernels[lanes] = _compile(lanes)
    return _kernels[lanes]


IS_LEFT, MISSING_LEFT, ZERO_MISSING = 1, 2, 4  # bits of ``TreeOrder.flags``


@dataclass(frozen=True, eq=False)
class TreeOrder:
    """The plan's arrays with each tree's nodes contiguous (breadth-first inside a tree, a node's two children
    side by side): one tree's nodes stay in cache while the rows of a batch walk it. Kept small (about 37
    bytes a node) because a single row streams all of them from memory."""

    start: np.ndarray  # int64 [trees + 1]
    feature: np.ndarray  # int32 [nodes]: split column, -1 at a leaf
    threshold: np.ndarray  # float64 [nodes]
    parent: np.ndarray  # int32 [nodes], -1 at a root
    prev: np.ndarray  # int32 [nodes]: previous edge on the same column along the path, -1 if none
    flags: np.ndarray  # uint8 [nodes]: IS_LEFT | MISSING_LEFT | ZERO_MISSING
    z: np.ndarray  # float64 [nodes]: product of the column's cover fractions down to this edge
    value: np.ndarray  # float64 [nodes, W]
    tree_output: np.ndarray  # int32 [trees]
    saabas: np.ndarray  # float64 [nodes, W]
    children: np.ndarray  # int32 [nodes, 2]: left and right child (-1 at a leaf)
    max_nodes: int
    t: np.ndarray  # the plan's points and weights padded to a multiple of 4 (weight 0): the inner loops
    w: np.ndarray  # then have a fixed trip count that LLVM vectorises


def tree_order(p: Plan) -> TreeOrder:
    lay = p.lay
    n = len(lay.parent)
    order = np.argsort(lay.tree_of, kind="stable")
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)

    def moved(index: np.ndarray) -> np.ndarray:
        return np.where(index >= 0, where[np.maximum(index, 0)], -1).astype(np.int32)

    counts = np.bincount(lay.tree_of, minlength=len(p.ensemble.roots))
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    c = np.ascontiguousarray
    parent, is_left = moved(lay.parent[order]), lay.is_left[order]
    children = np.full((n, 2), -1, dtype=np.int32)
    kids = np.flatnonzero(parent >= 0)
    children[parent[kids], np.where(is_left[kids], 0, 1)] = kids
    flags = (is_left * IS_LEFT + p.missing_left[order] * MISSING_LEFT
             + p.zero_missing[order] * ZERO_MISSING).astype(np.uint8)
    pad = -len(p.t) % _LANES
    t = np.concatenate([p.t, np.full(pad, 0.5)])
    w = np.concatenate([p.w, np.zeros(pad)])
    return TreeOrder(start, c(lay.feature[order].astype(np.int32)), c(p.threshold[order]), parent,
                     moved(lay.prev[order]), flags, c(lay.z[order]), c(p.value[order]),
                     p.ensemble.tree_output.astype(np.int32), c(p.saabas[order]), children,
                     int(counts.max(initial=1)), t, w)


def explain(p: Plan, t: TreeOrder, X: np.ndarray, approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    kernels = _load(len(t.t))
    assert kernels is not None, "numba is not installed"
    X = prepare_rows(p.ensemble, X)
    args = (X, t.start, t.feature, t.threshold, t.flags, t.value, t.tree_output, p.ensemble.n_outputs,
            p.ensemble.n_columns)
    if approximate:
        phi, out = kernels["saabas"](*args, t.children, t.saabas)
    else:
        phi, out = kernels["shap"](*args, t.parent, t.prev, t.z, t.t, t.w, t.max_nodes)
    return phi, out + p.ensemble.base


def warm_up() -> bool:
    """Compile now (a few seconds the first time, less from the disk cache); False without numba."""
    return _load() is not None


def _compile(lanes: int = _LANES) -> dict[str, Any]:
    """``lanes``: the padded number of quadrature points, a constant to the compiler."""
    import numba

    jit = numba.njit(nogil=True, cache=True)

    @jit
    def goes_left(x: Any, node: int, feature: Any, threshold: Any, flags: Any) -> bool:
        v = x[feature[node]]
        if np.isnan(v) or ((flags[node] & 4) != 0 and abs(v) <= 1.0000000180025095e-35):
            return (flags[node] & 2) != 0
        return v <= threshold[node]

    @jit
    def shap_rows(X: Any, start: Any, feature: Any, threshold: Any, flags: Any, value: Any, tree_output: Any,
                  k: int, c: int, parent: Any, prev: Any, z: Any, t: Any, w: Any, max_nodes: int) -> Any:
        rows, width, q = X.shape[0], value.shape[1], lanes
        phi = np.zeros((rows, k, c))
        out = np.zeros((rows, k))
        big_p = np.empty((max_nodes, q))
        big_a = np.empty((max_nodes, q, width))
        coef = np.empty((max_nodes, q))
        inverse = np.ones((max_nodes, q))  # 1 / (z + (1 - z) t) where the row follows the column so far
        so_far = np.empty(max_nodes, dtype=np.bool_)
        on_path = np.empty(max_nodes, dtype=np.bool_)
        left = np.empty(max_nodes, dtype=np.bool_)
        one_minus_t = np.empty(q)
        drop = np.empty(q)  # -1 / (1 - t): a column's term once the row left one of its edges
        for j in range(q):
            one_minus_t[j] = 1.0 - t[j]
            drop[j] = -1.0 / (1.0 - t[j])
        for tree in range(start.shape[0] - 1):
            s, e = start[tree], start[tree + 1]
            target = tree_output[tree]
            for r in range(rows):
                x = X[r]
                for g in range(s, e):  # down: which way the row goes, P(t) and each edge's coefficients
                    i = g - s
                    if feature[g] >= 0:
                        left[i] = goes_left(x, g, feature, threshold, flags)
                    pa = parent[g]
                    if pa < 0:
                        so_far[i] = True
                        on_path[i] = True
                        for j in range(q):
                            big_p[i, j] = 1.0
                        continue
                    pi = pa - s
                    follows = left[pi] == ((flags[g] & 1) != 0)
                    before = prev[g]
                    o_prev = True if before < 0 else so_far[before - s]
                    so_far[i] = o_prev and follows
                    on_path[i] = on_path[pi] and follows
                    zn = z[g]
                    zp = 1.0 if before < 0 else z[before]
                    bi = 0 if before < 0 else before - s
                    if not o_prev:  # the column's factor stays z (1 - t): only the cover fraction changes
                        ratio = zn / zp if zp != 0.0 else 0.0
                        for j in range(q):
                            big_p[i, j] = big_p[pi, j] * ratio
                            coef[i, j] = 0.0
                    elif follows:
                        for j in range(q):
                            inv_prev = 1.0 if before < 0 else inverse[bi, j]
                            f_now = zn + (1.0 - zn) * t[j]
                            inverse[i, j] = 1.0 / f_now
                            big_p[i, j] = big_p[pi, j] * f_now * inv_prev
                            coef[i, j] = w[j] * ((1.0 - zn) * inverse[i, j] - (1.0 - zp) * inv_prev)
                    else:
                        for j in range(q):
                            inv_prev = 1.0 if before < 0 else inverse[bi, j]
                            big_p[i, j] = big_p[pi, j] * (zn * one_minus_t[j]) * inv_prev
                            coef[i, j] = w[j] * ((drop[j] if zn != 0.0 else 0.0) - (1.0 - zp) * inv_prev)
                for g in range(e - 1, s - 1, -1):  # up: A(t) from the leaves, each edge credits its column
                    i = g - s
                    if feature[g] < 0:
                        for j in range(q):
                            for v in range(width):
                                big_a[i, j, v] = big_p[i, j] * value[g, v]
                        if on_path[i]:
                            for v in range(width):
                                out[r, v if target < 0 else target] += value[g, v]
                    pa = parent[g]
                    if pa < 0:
                        continue
                    pi = pa - s
                    col = feature[pa]
                    first = (flags[g] & 1) == 0  # the right child comes last, so it is summed up first
                    for v in range(width):
                        total = 0.0
                        for j in range(q):
                            total += coef[i, j] * big_a[i, j, v]
                            if first:
                                big_a[pi, j, v] = big_a[i, j, v]
                            else:
                                big_a[pi, j, v] += big_a[i, j, v]
                        phi[r, v if target < 0 else target, col] += total
        return phi, out

    @jit
    def saabas_rows(X: Any, start: Any, feature: Any, threshold: Any, flags: Any, value: Any, tree_output: Any,
                    k: int, c: int, children: Any, saabas: Any) -> Any:
        rows, width = X.shape[0], value.shape[1]
        phi = np.zeros((rows, k, c))
        out = np.zeros((rows, k))
        for r in range(rows):
            x = X[r]
            for tree in range(start.shape[0] - 1):
                target = tree_output[tree]
                node = start[tree]
                while feature[node] >= 0:
                    child = children[node, 0] if goes_left(x, node, feature, threshold, flags) else children[node, 1]
                    for v in range(width):
                        phi[r, v if target < 0 else target, feature[node]] += saabas[child, v]
                    node = child
                for v in range(width):
                    out[r, v if target < 0 else target] += value[node, v]
        return phi, out

    return {"shap": shap_rows, "saabas": saabas_rows}
