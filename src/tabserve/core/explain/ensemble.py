"""The trees an explanation walks: plain arrays read from the bundle, checked, and laid out for TreeSHAP.

Each tree is a binary tree over the *model's input columns* (after the pipeline's preprocessing). A node
sends a row left when ``x[feature] <= threshold``; NaN goes to ``missing_left``; with ``zero_missing``
(LightGBM's ``missing_type=Zero``) a zero or NaN goes there. ``float32_input`` rounds the row to float32
first (scikit-learn's trees and XGBoost do); ``snap_zero`` reads ``|x| <= 1e-35`` as 0 (LightGBM).
``cover`` is each node's training weight (scikit-learn ``weighted_n_node_samples``, HistGradientBoosting
``count``, LightGBM ``internal_count``/``leaf_count``, XGBoost ``sum_hessian``): what path-dependent
TreeSHAP averages over when a feature is unknown. Leaf ``value`` rows are already scaled as the model
adds them (1/T for a forest, the learning rate for gradient boosting); ``tree_output`` says which output
each tree adds to (-1: a tree whose leaves hold every output, as a forest classifier's class fractions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold


class EnsembleError(ValueError):
    """The arrays do not describe a valid ensemble (a damaged or hand-edited explain file)."""


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    feature: np.ndarray  # int32 [nodes]: model column of the split, -1 at a leaf
    threshold: np.ndarray  # float64 [nodes]
    left: np.ndarray  # int32 [nodes]: global index of the left child, -1 at a leaf
    right: np.ndarray  # int32 [nodes]
    missing_left: np.ndarray  # bool [nodes]
    zero_missing: np.ndarray  # bool [nodes]
    cover: np.ndarray  # float64 [nodes]
    value: np.ndarray  # float64 [nodes, W]: leaf values (internal rows unused)
    roots: np.ndarray  # int64 [trees]
    tree_output: np.ndarray  # int32 [trees]: the output a tree adds to, or -1 for all W outputs
    base: np.ndarray  # float64 [outputs]: added before any tree
    n_columns: int
    float32_input: bool = False
    snap_zero: bool = False

    @property
    def n_outputs(self) -> int:
        return len(self.base)

    def check(self) -> None:
        n = len(self.feature)
        arrays = (self.threshold, self.left, self.right, self.missing_left, self.zero_missing, self.cover)
        if any(len(a) != n for a in arrays) or self.value.ndim != 2 or len(self.value) != n:
            raise EnsembleError("node arrays differ in length")
        if len(self.tree_output) != len(self.roots) or len(self.roots) == 0:
            raise EnsembleError("no trees, or one output index per tree is missing")
        leaf = self.left < 0
        if np.any(leaf != (self.right < 0)):
            raise EnsembleError("a node has exactly one child")
        inner = ~leaf
        if np.any((self.left[inner] >= n) | (self.right[inner] >= n)):
            raise EnsembleError("a child index points past the last node")
        if np.any((self.feature[inner] < 0) | (self.feature[inner] >= self.n_columns)):
            raise EnsembleError(f"a split uses a column outside 0..{self.n_columns - 1}")
        if np.any((self.roots < 0) | (self.roots >= n)):
            raise EnsembleError("a root index points past the last node")
        width, k = self.value.shape[1], self.n_outputs
        bad = (self.tree_output >= k) | (self.tree_output < -1) | ((self.tree_output == -1) & (width != k))
        if np.any(bad):
            raise EnsembleError("a tree adds to an output that does not exist")
        if not np.all(np.isfinite(self.cover)) or np.any(self.cover < 0):
            raise EnsembleError("node covers must be finite and >= 0")


@dataclass(frozen=True, eq=False)
class Layout:
    """The ensemble in breadth-first order: all trees' depth-0 nodes, then depth 1, ...; the two children of
    the k-th inner node of one depth are nodes 2k and 2k+1 of the next. Parents come before children (the
    compiled kernel walks trees down, then up, in this order) and each depth is one numpy slice."""

    order: np.ndarray  # new position -> old node index
    levels: np.ndarray  # int64 [depths + 1]: where each depth starts
    tree_of: np.ndarray  # int32 [nodes]: the tree a node belongs to
    parent: np.ndarray  # int32 [nodes]: the parent's position, -1 at a root
    feature: np.ndarray  # int32 [nodes]: split column (-1 at a leaf)
    inner: np.ndarray  # bool [nodes]
    is_left: np.ndarray  # bool [nodes]: the node is its parent's left child
    # edge data (per node but the roots: the edge from the parent)
    edge_feature: np.ndarray  # int32 [nodes]: the parent's split column (-1 at a root)
    prev: np.ndarray  # int32 [nodes]: the nearest ancestor edge on the same column, -1 if none
    z: np.ndarray  # float64 [nodes]: product of cover fractions of this column's edges down to here
    z_prev: np.ndarray  # float64 [nodes]: the same for ``prev`` (1 when there is none)
    expectation: np.ndarray  # float64 [nodes, W]: cover-weighted mean of the leaves below
    path_features: int  # the most distinct columns on one root-to-leaf path


def layout(ens: TreeEnsemble) -> Layout:
    """Breadth-first order over all trees, and each edge's row-independent TreeSHAP quantities."""
    ens.check()
    order_levels: list[np.ndarray] = []
    tree_levels: list[np.ndarray] = []
    current = ens.roots.astype(np.int64)
    trees = np.arange(len(ens.roots), dtype=np.int32)
    seen = 0
    while len(current):
        order_levels.append(current)
        tree_levels.append(trees)
        seen += len(current)
        if seen > len(ens.feature):
            raise EnsembleError("the trees share nodes or contain a cycle")
        inner = ens.left[current] >= 0
        kids = np.stack([ens.left[current[inner]], ens.right[current[inner]]], axis=1).reshape(-1)
        trees = np.repeat(trees[inner], 2)
        current = kids.astype(np.int64)
    order = np.concatenate(order_levels)
    levels = np.cumsum([0] + [len(o) for o in order_levels]).astype(np.int64)
    n = len(order)
    position = np.full(len(ens.feature), -1, dtype=np.int64)
    position[order] = np.arange(n)
    feature = ens.feature[order].astype(np.int32)
    inner = ens.left[order] >= 0
    feature[~inner] = -1
    parent = np.full(n, -1, dtype=np.int32)
    is_left = np.zeros(n, dtype=bool)
    for d in range(len(levels) - 2):
        lo, hi, nxt = levels[d], levels[d + 1], levels[d + 1]
        parents = np.flatnonzero(inner[lo:hi]) + lo
        parent[nxt:nxt + 2 * len(parents)] = np.repeat(parents, 2)
        is_left[nxt:nxt + 2 * len(parents):2] = True
    cover = ens.cover[order]
    edge_feature = np.where(parent >= 0, feature[np.maximum(parent, 0)], -1).astype(np.int32)
    kids = parent >= 0
    # a child's cover over its parent's, as shap and XGBoost's own TreeSHAP take it: XGBoost's float32
    # hessian sums make a parent differ from the sum of its children (~1e-7), and the fraction of that sum
    # would move its SHAP values by as much; the expectation below uses the same fractions, so the values
    # still add up to the output exactly
    parent_cover = np.where(kids, cover[np.maximum(parent, 0)], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(kids & (parent_cover > 0), cover / np.where(parent_cover > 0, parent_cover, 1.0), 0.5)
    prev, z, z_prev, path_features = _edges(levels, parent, edge_feature, frac, ens.n_columns)
    expectation = _expectations(levels, inner, ens.value[order], frac)
    tree_of = np.concatenate(tree_levels).astype(np.int32)
    return Layout(order, levels, tree_of, parent, feature, inner, is_left, edge_feature, prev, z, z_prev,
                  expectation, path_features)


def _edges(levels: np.ndarray, parent: np.ndarray, edge_feature: np.ndarray, frac: np.ndarray,
           n_columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For each edge: the previous edge on its column along the path, and the products of cover fractions."""
    n = len(parent)
    prev = np.full(n, -1, dtype=np.int32)
    found = parent < 0
    anc = parent.copy()
    for _ in range(len(levels)):  # walk up one ancestor per step, every edge at once
        live = (anc >= 0) & ~found
        if not live.any():
            break
        safe = np.maximum(anc, 0)
        match = live & (edge_feature[safe] == edge_feature)
        prev[match] = anc[match]
        found |= match
        anc = np.where(live, parent[safe], -1)
    z = np.ones(n)
    z_prev = np.ones(n)
    distinct = np.zeros(n, dtype=np.int32)
    for d in range(1, len(levels) - 1):
        lo, hi = levels[d], levels[d + 1]
        before = prev[lo:hi]
        has = before >= 0
        z_prev[lo:hi] = np.where(has, z[np.maximum(before, 0)], 1.0)
        z[lo:hi] = z_prev[lo:hi] * frac[lo:hi]
        distinct[lo:hi] = distinct[parent[lo:hi]] + (~has)
    return prev, z, z_prev, int(distinct.max(initial=0))


def _expectations(levels: np.ndarray, inner: np.ndarray, value: np.ndarray, frac: np.ndarray) -> np.ndarray:
    expectation = np.where(inner[:, None], 0.0, value).astype(np.float64)
    for d in range(len(levels) - 2, 0, -1):  # a depth's nodes are the children of the one above
        lo, hi = levels[d], levels[d + 1]
        weighted = (expectation[lo:hi] * frac[lo:hi, None]).reshape(-1, 2, value.shape[1]).sum(axis=1)
        plo, phi = levels[d - 1], levels[d]
        parents = np.flatnonzero(inner[plo:phi]) + plo
        expectation[parents] = weighted
    return expectation
