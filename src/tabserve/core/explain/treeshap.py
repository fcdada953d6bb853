"""Exact path-dependent TreeSHAP in O(nodes x q) per row, and Saabas path attribution.

The values are those of ``shap.TreeExplainer``'s default (Lundberg et al. 2020, Algorithm 2), computed in
another way. For a leaf l with value v whose path splits on the distinct columns F (|F| = d), call
``z_j`` the product of the cover fractions of the path's edges on column j and ``o_j`` 1 when the row
follows every one of them, else 0. Then (Shapley weights as a Beta integral, as in Linear TreeShap,
Yu et al. 2022)::

    phi_i += v (o_i - z_i) * integral_0^1 prod_{j in F, j != i} (z_j + (o_j - z_j) t) dt

a polynomial of degree d - 1 in t, integrated exactly by Gauss-Legendre with ceil(d / 2) points. Summed
over leaves, the integrand of an edge factorises: ``P(t)``, the product down to a node, is carried from
the root (a column met again replaces its earlier factor: multiply by the new one, divide by the old),
``A(t) = sum of v * P_leaf(t)`` over the leaves below is added up from the leaves, and each edge adds
``w_q [ (o - z)/f(t) - (o_prev - z_prev)/f_prev(t) ] * A(t)`` to its column's value (the second term takes
back what the previous edge on that column counted for these leaves; the sum over the path telescopes to
the leaf's term). ``o`` is 0 or 1, so every edge is one of three cases (the row follows the column so far
and this edge / so far but not this edge / not so far: then the factor stays ``z (1 - t)`` and the edge
adds nothing), all given by ``f = z + (o - z) t`` with no branch on the case; ``Plan`` holds what is
row-independent.

Work per row: a few multiply-adds per node and quadrature point, against O(leaves x depth^2) for the
classic algorithm. ``explain_numpy`` walks one depth of every tree at a time; ``compiled`` has the same
loop in numba, one tree at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tabserve.core.explain.ensemble import K_ZERO, Layout, TreeEnsemble, layout

TINY = 1e-300  # an empty node's cover fraction: keeps every factor z + (o - z) t invertible


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything row-independent, in the breadth-first layout (see ``ensemble.Layout``)."""

    ensemble: TreeEnsemble
    lay: Layout
    threshold: np.ndarray  # float64 [nodes]
    missing_left: np.ndarray  # bool [nodes]
    zero_missing: np.ndarray  # bool [nodes]
    value: np.ndarray  # float64 [nodes, W]: leaf values, zero at inner nodes
    saabas: np.ndarray  # float64 [nodes, W]: E[node] - E[parent] (0 at roots)
    out_index: np.ndarray  # int64 [nodes, W]: output of each value column (by the node's tree)
    expected: np.ndarray  # float64 [outputs]
    t: np.ndarray  # Gauss-Legendre points on (0, 1)
    w: np.ndarray  # and their weights
    z: np.ndarray  # the layout's z and z_prev, at least TINY: every factor z + (o - z) t stays invertible
    z_prev: np.ndarray
    prev_slot: np.ndarray  # the layout's prev, with "none" as slot ``nodes``

    @property
    def points(self) -> int:
        return len(self.t)


def plan(ens: TreeEnsemble) -> Plan:
    lay = layout(ens)
    x, w = np.polynomial.legendre.leggauss(max(1, -(-lay.path_features // 2)))
    roots = lay.parent < 0
    order = lay.order
    value = np.where(lay.inner[:, None], 0.0, ens.value[order]).astype(np.float64)
    saabas = np.where(roots[:, None], 0.0, lay.expectation - lay.expectation[np.maximum(lay.parent, 0)])
    width = value.shape[1]
    tree_output = ens.tree_output[lay.tree_of]
    out_index = np.where(tree_output[:, None] >= 0, tree_output[:, None], np.arange(width)[None, :])
    expected = ens.base.astype(np.float64).copy()
    np.add.at(expected, out_index[roots].reshape(-1), lay.expectation[roots].reshape(-1))
    return Plan(ens, lay, ens.threshold[order].astype(np.float64), ens.missing_left[order].astype(bool),
                ens.zero_missing[order].astype(bool), value, saabas, out_index.astype(np.int64), expected,
                (x + 1) / 2, w / 2, np.maximum(lay.z, TINY), np.maximum(lay.z_prev, TINY),
                np.where(lay.prev >= 0, lay.prev, len(lay.prev)).astype(np.int64))


def prepare_rows(ens: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """The rows as the trees compare them: float32-rounded and/or tiny values read as zero."""
    X = np.asarray(X, dtype=np.float64)
    if ens.float32_input:
        with np.errstate(over="ignore"):
            X = X.astype(np.float32).astype(np.float64)
    if ens.snap_zero:
        X = np.where(np.abs(X) <= K_ZERO, 0.0, X)
    return np.ascontiguousarray(X)


def go_left(p: Plan, x: np.ndarray) -> np.ndarray:
    """Per node (inner nodes only are meaningful): does this row go to the left child?"""
    v = x[np.maximum(p.lay.feature, 0)]
    missing = np.isnan(v) | (p.zero_missing & (np.abs(v) <= K_ZERO))
    return np.where(missing, p.missing_left, v <= p.threshold)


def explain_numpy(p: Plan, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contributions [rows, outputs, columns] and the trees' outputs [rows, outputs], in numpy."""
    X = prepare_rows(p.ensemble, X)
    k, c = p.ensemble.n_outputs, p.ensemble.n_columns
    phi = np.zeros((len(X), k, c))
    out = np.zeros((len(X), k))
    for r, x in enumerate(X):
        phi[r], out[r] = _one_row(p, x)
    return phi, out + p.ensemble.base


def _follows(p: Plan, x: np.ndarray) -> np.ndarray:
    """Per node: does the row take the edge from its parent? (True at roots.)"""
    lay = p.lay
    gl = go_left(p, x)
    parent = np.maximum(lay.parent, 0)
    return np.where(lay.parent < 0, True, gl[parent] == lay.is_left)


def _one_row(p: Plan, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lay = p.lay
    levels, parent = lay.levels, lay.parent
    follows = _follows(p, x)
    n, q, width = len(parent), p.points, p.value.shape[1]
    t, w = p.t, p.w
    # slot n stands for "no previous edge on this column": o = 1 and 1/f = 1 there, as in the compiled kernel
    so_far = np.ones(n + 1)  # 1.0 where the row followed every edge on this column down to here
    on_path = np.ones(n, dtype=bool)
    big_p = np.ones((n, q))
    coef = np.zeros((n, q))
    inverse = np.ones((n + 1, q))  # 1 / f of each node's edge
    z, z_prev, prev_slot = p.z, p.z_prev, p.prev_slot
    for d in range(1, len(levels) - 1):  # branch-free as in the compiled kernel: f = z + (o - z) t
        s = slice(levels[d], levels[d + 1])
        before = prev_slot[s]
        o_prev = so_far[before]
        o = o_prev * follows[s]
        so_far[s] = o
        on_path[s] = on_path[parent[s]] & follows[s]
        zn, zp = z[s, None], z_prev[s, None]
        f_now = zn + (o[:, None] - zn) * t
        inv_now = 1.0 / f_now
        inv_prev = inverse[before]
        inverse[s] = inv_now
        big_p[s] = big_p[parent[s]] * f_now * inv_prev
        coef[s] = w * ((o[:, None] - zn) * inv_now - (o_prev[:, None] - zp) * inv_prev)
    big_a = big_p[:, :, None] * p.value[:, None, :]  # leaves; inner rows are zero and filled below
    for d in range(len(levels) - 2, 0, -1):
        s = slice(levels[d], levels[d + 1])
        upper = slice(levels[d - 1], levels[d])
        sums = big_a[s].reshape(-1, 2, q, width).sum(axis=1)
        big_a[np.flatnonzero(lay.inner[upper]) + upper.start] = sums
    edge_values = np.einsum("nq,nqw->nw", coef, big_a)
    k, c = p.ensemble.n_outputs, p.ensemble.n_columns
    cols = np.maximum(lay.edge_feature, 0)[:, None]
    flat = (p.out_index * c + cols).reshape(-1)
    phi = np.bincount(flat, weights=edge_values.reshape(-1), minlength=k * c).reshape(k, c)
    leaves = on_path & ~lay.inner
    out = np.bincount(p.out_index[leaves].reshape(-1), weights=p.value[leaves].reshape(-1), minlength=k)
    return phi, out


def saabas_numpy(p: Plan, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Saabas' path attribution: each split on the row's path credits E[child] - E[node] to its column."""
    X = prepare_rows(p.ensemble, X)
    lay = p.lay
    k, c = p.ensemble.n_outputs, p.ensemble.n_columns
    phi = np.zeros((len(X), k, c))
    out = np.zeros((len(X), k))
    cols = np.maximum(lay.edge_feature, 0)[:, None]
    flat_all = (p.out_index * c + cols)
    for r, x in enumerate(X):
        follows = _follows(p, x)
        on_path = np.ones(len(lay.parent), dtype=bool)
        for d in range(1, len(lay.levels) - 1):
            s = slice(lay.levels[d], lay.levels[d + 1])
            on_path[s] = on_path[lay.parent[s]] & follows[s]
        edges = on_path & (lay.parent >= 0)
        phi[r] = np.bincount(flat_all[edges].reshape(-1), weights=p.saabas[edges].reshape(-1),
                             minlength=k * c).reshape(k, c)
        leaves = on_path & ~lay.inner
        out[r] = np.bincount(p.out_index[leaves].reshape(-1), weights=p.value[leaves].reshape(-1), minlength=k)
    return phi, out + p.ensemble.base
