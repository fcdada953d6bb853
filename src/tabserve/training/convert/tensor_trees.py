"""One ``TreeEnsemble`` node (ai.onnx.ml opset 5) as a tensor graph of standard operators, exactly.

onnxruntime's CUDA provider has no tree kernel: a ``TreeEnsemble`` runs on the CPU even in a GPU session. The
same trees as Gather, comparisons and index arithmetic run there end to end. Every row walks every tree at
once, one level a step (the "tree traversal" and "perfect tree traversal" strategies of Hummingbird, Nakandala
et al., OSDI 2020), with the node's test in the input's double precision:

- ``perfect``: each tree padded to depth D (a leaf above D repeated below itself); level ``d`` of all trees is
  one table and the slot of tree ``t``, position ``p`` is ``t * 2**d + p``, so the next slot is ``2 * slot``
  plus 0 (true branch) or 1: no child table to read. The tables hold ``T * 2**(D + 1)`` slots: used up to
  ``PERFECT_SLOTS``.
- ``tree``: every node has its two children side by side in one table (``first[slot]``, ``first[slot] + 1``),
  so the next slot is one Gather plus the bit; a leaf points at a pair of copies of itself and stays there.
  Size grows with the nodes, not the depth: deep LightGBM trees fit.

The node's test: ``x <= t`` goes to the true branch and NaN fails it, as onnxruntime does. A split that sends NaN
to the true branch (``nodes_missing_value_tracks_true``) reads the negated input with the branches swapped
(``not (x <= t)`` is ``-x <= prev(-t)``; ``t = +inf`` is then always true and is skipped), so no step tests
NaN. A ``BRANCH_MEMBER`` split (native categories) has threshold NaN (``x <= NaN`` never holds) and looks its
value up in a bitmap row of its own: column ``c`` for a whole number ``0 <= c < C``, column C for any other
number, column C + 1 (the NaN side) for NaN.

Leaves: each tree's leaf weight, added per target strictly in tree order (``Sum`` nodes of at most 8 inputs,
each starting from the previous partial sum: onnxruntime's CPU and CUDA ``Sum`` add their inputs in order),
``(0 + w_0) + w_1 + ...``, as the ``TreeEnsemble`` kernel does on one thread; ``AVERAGE`` then divides by the
number of trees. So the tensor graph is the CPU graph bit for bit (the tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tabserve.training.convert.graph import Graph

BRANCH_LEQ, BRANCH_MEMBER = 0, 6
AVERAGE, SUM = 0, 1
PERFECT_SLOTS = 1 << 20  # padded slots above which the perfect strategy's tables (~12 bytes a slot) are not used
MAX_CATEGORY = 4096  # member values above this: no bitmap (one row of C + 2 bytes per categorical split)
SUM_INPUTS = 8  # onnxruntime's CUDA Sum adds up to 8 same-shape inputs in one kernel
Strategy = Literal["perfect", "tree"]


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


class _Plan:
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
class _Tables:
    """Slot tables: per level (perfect) or one for all levels (tree)."""

    column: list[np.ndarray]
    threshold: list[np.ndarray]
    member: list[np.ndarray]
    first: np.ndarray | None  # tree strategy: the slot of each slot's true child (false child: + 1)
    start: np.ndarray  # each tree's first slot
    leaf: np.ndarray  # the leaf (or -1) at each final slot


def perfect_slots(e: Ensemble, depth: int) -> int:
    return e.n_trees * (1 << (depth + 1))


def _perfect(plan: _Plan, depth: int) -> _Tables:
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
    return _Tables(columns, thresholds, members, None, np.arange(trees), leaf)


def _tree(plan: _Plan) -> _Tables:
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
    return _Tables([np.array(col)], [np.array(thr)], [np.array(mem)], np.array(first), np.array(starts),
                   np.array(leaf))


def choose(e: Ensemble, width: int) -> tuple[Strategy, int]:
    """The strategy for this ensemble and its depth: perfect while its padded tables stay small."""
    plan = _Plan(e, width)
    depth = plan.depth()
    return ("perfect" if perfect_slots(e, depth) <= PERFECT_SLOTS else "tree"), depth


def compile_ensemble(graph: Graph, x: str, width: int, e: Ensemble, strategy: Strategy | None = None) -> str:
    """``[N, n_targets]`` double: what the ``TreeEnsemble`` ``e`` gives for ``x`` (``[N, width]`` double)."""
    plan = _Plan(e, width)
    depth = plan.depth()
    if strategy is None:
        strategy = "perfect" if perfect_slots(e, depth) <= PERFECT_SLOTS else "tree"
    tables = _perfect(plan, depth) if strategy == "perfect" else _tree(plan)
    c = graph.const
    i32 = np.int32
    source = graph.op("Concat", [x, graph.op("Neg", [x])], axis=1) if plan.negated else x
    codes = _codes(graph, source, plan.categories) if plan.categories else None
    bitmap = c(np.concatenate(plan.bitmap), "tt_bitmap") if codes else None
    row_width = plan.categories + 2
    slot: str | None = None  # [N, T] int32; None: still at the roots (constant)
    roots, trees = tables.start, e.n_trees
    made: dict[tuple[str, int], str] = {}

    def table(kind: str, k: int, values: np.ndarray) -> str:  # one constant per table, whatever the level
        if (kind, k) not in made:
            made[kind, k] = c(values, f"tt_{kind}")
        return made[kind, k]

    for d in range(depth):
        k = d if strategy == "perfect" else 0
        col, thr, mem = tables.column[k], tables.threshold[k], tables.member[k] * row_width
        if slot is None:  # the roots: the same slot for every row, a constant column of the input
            value = graph.op("Gather", [source, c(col[roots].astype(np.int64), "tt_col")], axis=1)
            cond = graph.op("LessOrEqual", [value, c(thr[roots], "tt_thr")])
            if codes is not None:
                code = graph.op("Gather", [codes, c(col[roots].astype(np.int64), "tt_col")], axis=1)
                hit = graph.op("Gather", [bitmap, graph.op("Add", [code, c(mem[roots].astype(i32), "tt_row")])],
                               axis=0)
                cond = graph.op("Or", [cond, hit])
            base = c((2 * roots if strategy == "perfect" else tables.first[roots]).astype(i32), "tt_base")
        else:
            flat = graph.op("Reshape", [slot, c(np.array([-1], np.int64), "flat")])
            column = look(graph, table("col", k, col.astype(i32)), flat, trees)
            value = graph.op("GatherElements", [source, column], axis=1)
            cond = graph.op("LessOrEqual", [value, look(graph, table("thr", k, thr), flat, trees)])
            if codes is not None:
                code = graph.op("GatherElements", [codes, column], axis=1)
                row = look(graph, table("row", k, mem.astype(i32)), flat, trees)
                hit = look(graph, bitmap, graph.op("Reshape", [graph.op("Add", [code, row]),  # type: ignore[arg-type]
                                                                c(np.array([-1], np.int64), "flat")]), trees)
                cond = graph.op("Or", [cond, hit])
            base = (graph.op("Add", [slot, slot]) if strategy == "perfect"
                    else look(graph, table("first", 0, tables.first.astype(i32)), flat, trees))
        bit = graph.cast(graph.op("Not", [cond]), TensorProto.INT32)  # type: ignore[arg-type]
        slot = graph.op("Add", [base, bit])  # type: ignore[assignment]
    if slot is None:
        raise Unsupported("an ensemble of lone leaves")
    return _leaf_sums(graph, e, tables.leaf, slot)


def look(graph: Graph, table: str, flat: str, trees: int) -> str:
    """``table[slot]`` as ``[N, trees]`` for ``flat`` slots ``[N * trees]``: ``GatherElements`` of 1-D tensors
    (onnxruntime's CPU ``Gather`` copies element by element, measured 25x slower here; the reshapes are free)."""
    values = graph.op("GatherElements", [table, flat], axis=0)
    return graph.op("Reshape", [values, graph.const(np.array([-1, trees], np.int64), "rows_by_trees")])  # type: ignore[return-value]


def _codes(graph: Graph, x: str, categories: int) -> str:
    """``[N, F]`` int32: the bitmap column of each value (a whole number below ``categories``: itself; any
    other number: ``categories``; NaN: ``categories + 1``)."""
    c = graph.const
    whole = graph.op("And", [graph.op("Equal", [graph.op("Floor", [x]), x]),
                             graph.op("And", [graph.op("GreaterOrEqual", [x, c(np.array(0.0))]),
                                              graph.op("Less", [x, c(np.array(float(categories)))])])])
    code = graph.op("Where", [whole, x, c(np.array(float(categories)))])
    code = graph.op("Where", [graph.op("IsNaN", [x]), c(np.array(categories + 1.0)), code])
    return graph.cast(code, TensorProto.INT32)  # type: ignore[arg-type]


def _leaf_sums(graph: Graph, e: Ensemble, leaf_at: np.ndarray, slot: str) -> str:
    c = graph.const
    leaf = np.maximum(leaf_at, 0)
    trees = e.n_trees
    targets_of_tree = _tree_targets(e)
    if targets_of_tree is not None:  # each tree adds to one target: [N, T] leaf weights
        flat = graph.op("Reshape", [slot, c(np.array([-1], np.int64), "flat")])
        weights = look(graph, c(e.leaf_weight[leaf], "tt_weight"), flat, trees)  # type: ignore[arg-type]
        pieces = split_ones(graph, weights, trees)
        columns = []
        for k in range(e.n_targets):
            mine = [pieces[t] for t in range(trees) if targets_of_tree[t] == k]
            columns.append(ordered_sum(graph, mine) if mine else _zero_column(graph, weights))
        total = columns[0] if len(columns) == 1 else graph.op("Concat", columns, axis=1)
    else:  # a leaf adds to its own target: [N, T, K] with the weight in its target's column
        table = np.zeros((len(leaf), e.n_targets))
        table[np.arange(len(leaf)), e.leaf_target[leaf]] = e.leaf_weight[leaf]
        weights = graph.op("Gather", [c(table, "tt_weight"), slot], axis=0)
        summed = ordered_sum(graph, split_ones(graph, weights, trees))
        total = graph.op("Reshape", [summed, c(np.array([-1, e.n_targets], np.int64), "shape")])
    if e.average:
        total = graph.op("Div", [total, c(np.array(float(trees)), "trees")])
    return total  # type: ignore[return-value]


def _tree_targets(e: Ensemble) -> np.ndarray | None:
    """Each tree's target, when all its leaves add to the same one."""
    out = np.zeros(e.n_trees, np.int64)
    for t in range(e.n_trees):
        stack, seen = [int(e.roots[t])], set()
        while stack:
            node = stack.pop()
            if node < 0:
                seen.add(int(e.leaf_target[-1 - node]))
            else:
                stack += [int(e.true[node]), int(e.false[node])]
        if len(seen) != 1:
            return None
        out[t] = seen.pop()
    return out


def split_ones(graph: Graph, values: str, n: int, axis: int = 1) -> list[str]:
    """``values`` cut into ``n`` slices of length 1 along ``axis``."""
    if n == 1:
        return [values]
    sizes = graph.const(np.ones(n, np.int64), "tt_split")
    return graph.op("Split", [values, sizes], axis=axis, outputs=n)  # type: ignore[return-value]


def ordered_sum(graph: Graph, parts: list[str]) -> str:
    """``((parts[0] + parts[1]) + parts[2]) + ...``: chained ``Sum`` nodes, each adding in input order."""
    total = parts[0]
    rest = parts[1:]
    while rest:
        take = SUM_INPUTS - 1
        total = graph.op("Sum", [total, *rest[:take]])  # type: ignore[assignment]
        rest = rest[take:]
    return total


def _zero_column(graph: Graph, like: str) -> str:
    """``[N, 1]`` of +0.0 (a target no tree adds to): what onnxruntime leaves there."""
    c = graph.const
    rows = graph.op("Slice", [graph.op("Shape", [like]), c(np.array([0], np.int64)), c(np.array([1], np.int64))])
    shape = graph.op("Concat", [rows, c(np.array([1], np.int64))], axis=0)
    return graph.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros(1), "zero"))  # type: ignore[return-value]


__all__ = ["PERFECT_SLOTS", "Ensemble", "Strategy", "Unsupported", "choose", "compile_ensemble", "ordered_sum",
           "read_ensemble", "split_ones"]
