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

The tables come from ``tensor_layout``; every table lookup is a ``GatherElements`` on flattened slots (the
CPU ``Gather`` copies element by element: 6.0 against 0.96 s for 2400 rows of a 500-tree LightGBM).

Leaves: each tree's leaf weight, added per target strictly in tree order (``Sum`` nodes of at most 8 inputs,
each starting from the previous partial sum: onnxruntime's CPU and CUDA ``Sum`` add their inputs in order),
``(0 + w_0) + w_1 + ...``, as the ``TreeEnsemble`` kernel does on one thread; ``AVERAGE`` then divides by the
number of trees. So the tensor graph is the CPU graph bit for bit (the tests check it).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from onnx import TensorProto, numpy_helper

from tabserve.training.convert.graph import Graph
from tabserve.training.convert.tensor_layout import (
    Ensemble,
    Plan,
    Unsupported,
    node_tables,
    perfect_slots,
    perfect_tables,
    read_ensemble,
)

PERFECT_SLOTS = 1 << 20  # padded slots above which the perfect strategy's tables (~12 bytes a slot) are not used
SUM_INPUTS = 8  # onnxruntime's CUDA Sum adds up to 8 same-shape inputs in one kernel
Strategy = Literal["perfect", "tree"]


def choose(e: Ensemble, width: int) -> tuple[Strategy, int]:
    """The strategy for this ensemble and its depth: perfect while its padded tables stay small."""
    plan = Plan(e, width)
    depth = plan.depth()
    return ("perfect" if perfect_slots(e, depth) <= PERFECT_SLOTS else "tree"), depth


def compile_ensemble(graph: Graph, x: str, width: int, e: Ensemble, strategy: Strategy | None = None) -> str:
    """``[N, n_targets]`` double: what the ``TreeEnsemble`` ``e`` gives for ``x`` (``[N, width]`` double)."""
    plan = Plan(e, width)
    depth = plan.depth()
    if strategy is None:
        strategy = "perfect" if perfect_slots(e, depth) <= PERFECT_SLOTS else "tree"
    tables = perfect_tables(plan, depth) if strategy == "perfect" else node_tables(plan)
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
        if e.n_targets == trees and np.array_equal(targets_of_tree, np.arange(trees)) and not e.average:
            # one target per tree (``trees.tree_values``): the weights as they are, each added to 0 as
            # onnxruntime does (-0.0 becomes +0.0)
            return graph.op("Add", [weights, c(np.array(0.0), "zero")])  # type: ignore[return-value]
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
