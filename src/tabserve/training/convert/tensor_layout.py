"""The node tables of a ``TreeEnsemble`` (ai.onnx.ml opset 5) as ``tensor_trees`` walks them.

``read_ensemble`` reads the node's attributes; ``_Plan`` turns each split into the tensor graph's test (a split
that sends NaN to the true branch reads the negated input with its branches swapped; a categorical split gets
a bitmap row) and skips splits that always go one way; ``perfect_tables`` lays the trees out level by level,
padded to their depth, and ``node_tables`` as one table whose slots hold their two children side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

BRANCH_LEQ, BRANCH_MEMBER = 0, 6
AVERAGE, SUM = 0, 1
MAX_CATEGORY = 4096  # member values above this: no bitmap (one row of C + 2 bytes per categorical split)


class Unsupported(Exception):
    """The ensemble uses something this compiler does not translate (a mode, an aggregate, a transform)."""


@dataclass(frozen=True, slots=True)
class Ensemble:
    """A ``TreeEnsemble`` node's attributes, node by node. ``true[i]``/``false[i]``: a child node id, or
    ``-1 - leaf`` for a leaf."""

    feature: np.ndarray
    threshold: np.ndarray
    mode: np.ndarray
    true: np.ndarray
    false: np.ndarray
    track: np.ndarray
    members: list[np.ndarray | None]
    roots: np.ndarray
    leaf_target: np.ndarray
    leaf_weight: np.ndarray
    n_targets: int
    average: bool

    @property
    def n_trees(self) -> int:
        return len(self.roots)


def read_ensemble(node: Any) -> Ensemble:
    a = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}

    def arr(name: str, dtype: Any, default: Any = None) -> np.ndarray:
        value = a.get(name, default)
        value = numpy_helper.to_array(value) if hasattr(value, "data_type") else value
        return np.asarray(value, dtype=dtype)

    if a.get("post_transform", 0) != 0:
        raise Unsupported(f"post_transform {a['post_transform']}")
    if a.get("aggregate_function", SUM) not in (AVERAGE, SUM):
        raise Unsupported(f"aggregate_function {a['aggregate_function']}")
    mode = arr("nodes_modes", np.int64)
    if not np.all(np.isin(mode, (BRANCH_LEQ, BRANCH_MEMBER))):
        raise Unsupported(f"node modes {sorted(set(mode.tolist()))}")
    n = len(mode)
    true_leaf, false_leaf = arr("nodes_trueleafs", bool), arr("nodes_falseleafs", bool)
    true, false = arr("nodes_truenodeids", np.int64), arr("nodes_falsenodeids", np.int64)
    members: list[np.ndarray | None] = [None] * n
    flat = arr("membership_values", np.float64, [])
    groups = np.split(flat, np.flatnonzero(np.isnan(flat)) + 1)
    for i, g in zip(np.flatnonzero(mode == BRANCH_MEMBER), groups, strict=False):
        members[i] = g[~np.isnan(g)]
    return Ensemble(arr("nodes_featureids", np.int64), arr("nodes_splits", np.float64), mode,
                    np.where(true_leaf, -1 - true, true), np.where(false_leaf, -1 - false, false),
                    arr("nodes_missing_value_tracks_true", bool, [0] * n).astype(bool), members,
                    arr("tree_roots", np.int64), arr("leaf_targetids", np.int64), arr("leaf_weights", np.float64),
                    int(a.get("n_targets", 1)), a.get("aggregate_function", SUM) == AVERAGE)


@dataclass
class _Split:
    """One test as the tensor graph does it: ``x[:, column] <= threshold`` or the bitmap row ``member``."""

    column: int
    threshold: float
    member: int  # bitmap row; 0: none (a ``<=`` test)


class Plan:
    """The ensemble's tests in the tensor graph's form, and the bitmap of its categorical splits."""

    def __init__(self, e: Ensemble, width: int) -> None:
        self.e, self.width, self.negated = e, width, False
        member_values = [m for m in e.members if m is not None]
        allv = np.concatenate(member_values) if member_values else np.zeros(0)
        if len(allv) and (np.any(allv != np.floor(allv)) or allv.min() < 0 or allv.max() >= MAX_CATEGORY):
            raise Unsupported("member values that are not small whole numbers")
        self.categories = int(allv.max()) + 1 if len(allv) else 0
        self.bitmap = [np.zeros(self.categories + 2, bool)]
        self.splits: dict[int, _Split] = {}

    def child(self, node: int, branch: bool) -> int:
        """The node (or ``-1 - leaf``) a row reaches from ``node``, skipping splits that always go one way."""
        nxt = int(self.e.true[node] if branch else self.e.false[node])
        while nxt >= 0 and self._always_true(nxt):
            nxt = int(self.e.true[nxt])
        return nxt

    def root(self, tree: int) -> int:
        r = int(self.e.roots[tree])
        while r >= 0 and self._always_true(r):
            r = int(self.e.true[r])
        return r

    def _always_true(self, i: int) -> bool:
        e = self.e
        return bool(e.mode[i] == BRANCH_LEQ and e.track[i] and np.isposinf(e.threshold[i]))

    def split(self, i: int) -> tuple[_Split, bool]:
        """Node ``i``'s test, and whether its branches are swapped (the test reads the negated input)."""
        e = self.e
        if np.isnan(e.threshold[i]) and e.mode[i] == BRANCH_LEQ:
            raise Unsupported("a NaN threshold")
        if e.mode[i] == BRANCH_MEMBER:
            if i not in self.splits:
                row = np.zeros(self.categories + 2, bool)
                row[e.members[i].astype(np.int64)] = True  # type: ignore[union-attr]
                row[-1] = e.track[i]
                self.bitmap.append(row)
                self.splits[i] = _Split(int(e.feature[i]), np.nan, len(self.bitmap) - 1)
            return self.splits[i], False
        if e.track[i]:
            self.negated = True
            return _Split(int(e.feature[i]) + self.width, float(np.nextafter(-e.threshold[i], -np.inf)), 0), True
        return _Split(int(e.feature[i]), float(e.threshold[i]), 0), False

    def depth(self) -> int:
        """Most tests on a path from a root to a leaf."""
        best = 0
        for t in range(self.e.n_trees):
            stack = [(self.root(t), 0)]
            while stack:
                node, d = stack.pop()
                if node < 0:
                    best = max(best, d)
                    continue
                stack += [(self.child(node, True), d + 1), (self.child(node, False), d + 1)]
        return best


@dataclass
class Tables:
    """Slot tables: per level (perfect) or one for all levels (tree)."""

    column: list[np.ndarray]
    threshold: list[np.ndarray]
    member: list[np.ndarray]
    first: np.ndarray | None  # tree strategy: the slot of each slot's true child (false child: + 1)
    start: np.ndarray  # each tree's first slot
    leaf: np.ndarray  # the leaf (or -1) at each final slot


def perfect_slots(e: Ensemble, depth: int) -> int:
    return e.n_trees * (1 << (depth + 1))


def perfect_tables(plan: Plan, depth: int) -> Tables:
    trees = plan.e.n_trees
    level = [plan.root(t) for t in range(trees)]
    columns, thresholds, members = [], [], []
    for _ in range(depth):
        col = np.zeros(len(level), np.int64)
        thr = np.zeros(len(level))
        mem = np.zeros(len(level), np.int64)
        nxt = []
        for g, node in enumerate(level):
            if node < 0:  # a leaf above the bottom: both copies below are itself
                nxt += [node, node]
                continue
            s, swapped = plan.split(node)
            col[g], thr[g], mem[g] = s.column, s.threshold, s.member
            a, b = plan.child(node, True), plan.child(node, False)
            nxt += [b, a] if swapped else [a, b]
        columns.append(col)
        thresholds.append(thr)
        members.append(mem)
        level = nxt
    leaf = np.array([-1 - n for n in level], np.int64)
    return Tables(columns, thresholds, members, None, np.arange(trees), leaf)


def node_tables(plan: Plan) -> Tables:
    col: list[int] = []
    thr: list[float] = []
    mem: list[int] = []
    first: list[int] = []
    leaf: list[int] = []

    def slot() -> int:
        col.append(0)
        thr.append(0.0)
        mem.append(0)
        first.append(0)
        leaf.append(-1)
        return len(col) - 1

    starts = []
    for t in range(plan.e.n_trees):
        start = slot()
        starts.append(start)
        todo = [(start, plan.root(t))]
        while todo:
            s, node = todo.pop()
            pair = slot()
            slot()
            first[s] = pair
            if node < 0:  # the leaf and its pair of copies, which point at themselves
                leaf[s] = leaf[pair] = leaf[pair + 1] = -1 - node
                first[pair] = first[pair + 1] = pair
                continue
            split, swapped = plan.split(node)
            col[s], thr[s], mem[s] = split.column, split.threshold, split.member
            a, b = plan.child(node, True), plan.child(node, False)
            todo += [(pair, b if swapped else a), (pair + 1, a if swapped else b)]
    return Tables([np.array(col)], [np.array(thr)], [np.array(mem)], np.array(first), np.array(starts),
                   np.array(leaf))


__all__ = ["AVERAGE", "BRANCH_LEQ", "BRANCH_MEMBER", "SUM", "Ensemble", "Plan", "Tables", "Unsupported",
           "node_tables", "perfect_slots", "perfect_tables", "read_ensemble"]
