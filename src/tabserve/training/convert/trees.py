"""Tree ensembles as one ONNX ``TreeEnsemble`` node (ai.onnx.ml opset 5), summed in the source's order.

A converter describes its trees as ``Tree`` (flat node arrays). ``tree_sums`` lets the ensemble add the
leaf values itself (``aggregate_function`` SUM, one target per class, the trees in round-major order,
starting from 0; AVERAGE for a forest's mean): onnxruntime adds them tree by tree in that order,
``((0 + t0) + t1) + ...``, which is how scikit-learn and LightGBM loop over their trees, when one thread
scores the rows; a multi-threaded session may split a large ensemble or batch over threads and add
their partial sums, which can move the last bit (~1e-16 relative, far inside the 1e-9 contract).
``tree_values`` instead writes tree ``t`` to target ``t`` only (each leaf added to an exact zero) and
``sequential_sum`` adds the columns strictly in order with ``CumSum`` (a sequential loop in
onnxruntime; the tests check it): XGBoost's float32 margin needs that. ``tree_vectors`` (forest
classifiers, K values per leaf, which opset 5 leaves cannot hold) gives each tree's leaf row, which
``mean_over_trees`` averages in tree order.

Splits: every numeric node is ``BRANCH_LEQ`` (onnxruntime's single-mode loop; mixed modes measured 15-25%
slower). A native categorical split is ``BRANCH_MEMBER`` on the model's category code, which
``categorical.categorical_input`` computes from text or numbers as the model does (``CategoricalColumn``).
NaN fails any comparison and so takes the false branch, the right child. A split that sends NaN left either
reads a negated copy of the input (regressors and forests: the batch layout) or tracks missing values
(booster classifiers and ``tree_values``: one row is faster without the copy's two nodes); see
``ensemble``. Where the input column cannot be NaN (``Tensor.nan``) a booster classifier's split keeps
the plain test, with no tracking.

Precision: everything is compared in double on the double input. A model that rounds its input to
float32 before comparing (scikit-learn's trees, XGBoost) gets each threshold replaced by the largest
double ``d`` with ``float32(d) <= t`` (``float32_leq``), which makes the double test agree with the
float32 one for every input; this measured faster than casting the input and running a float
ensemble, which needs more nodes around it for exact double leaves. A scaler's output is read as the
scaler's input with moved thresholds (``fold.unscale``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from onnx import TensorProto

from tabserve.errors import ExportError
from tabserve.training.convert.ensemble import ensemble_node
from tabserve.training.convert.fold import unscale
from tabserve.training.convert.graph import Graph, Tensor


@dataclass(frozen=True, slots=True)
class Tree:
    """Node ``i`` is a leaf where ``left[i] < 0``; otherwise a row goes to ``left[i]`` when its value of
    feature ``feature[i]`` is ``<= threshold[i]`` (the value as the model sees it: float32-rounded or
    double) and to ``right[i]`` otherwise; NaN goes left where ``missing_left[i]``. ``value[i]`` (a
    number or a row of K) is read at leaves only. The root is node ``root``."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    root: int = 0
    # A native categorical split: node i sends the values in ``member[i]`` (whole numbers, the model's category
    # codes) left and every other number right, NaN by ``missing_left[i]``; None for a ``<=`` split.
    member: tuple[np.ndarray | None, ...] | None = None

    @property
    def splits(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.left) >= 0)

    @property
    def categorical(self) -> np.ndarray:
        """Per node: is it a set-membership split."""
        if self.member is None:
            return np.zeros(len(self.left), bool)
        return np.array([m is not None for m in self.member], dtype=bool)


def constant_tree(value: float) -> Tree:
    """A tree that is one leaf: an intercept, a baseline, an init estimator's constant."""
    return Tree(np.zeros(1, np.int64), np.zeros(1), np.full(1, -1), np.full(1, -1), np.zeros(1, bool),
                np.asarray([value], dtype=np.float64))


def float32_below(threshold: np.ndarray) -> np.ndarray:
    """The float32 just below each float32 ``threshold``, as double: ``x < t`` is ``x <= float32_below(t)``
    for float32 ``x`` (XGBoost's split test)."""
    t32 = np.asarray(threshold, dtype=np.float32)
    return np.nextafter(t32, np.float32(-np.inf)).astype(np.float64)


def tree_values(graph: Graph, x: str | Tensor, width: int, trees: Sequence[Tree], *,
                float32_input: bool = False) -> str:
    """``[N, T]`` double: column ``t`` is the value of the leaf that the row reaches in ``trees[t]``.
    ``float32_input``: the model rounds its input to float32 before it compares."""
    tables = _tables(trees)
    if any(v.shape[1] != 1 for v in tables):
        raise ExportError("tree_values needs one value per leaf; use tree_vectors for several")
    x, trees = _read(x, _as_double(trees) if float32_input else trees)
    return ensemble_node(graph, x, width, trees, [v[:, 0] for v in tables], list(range(len(trees))),
                         len(trees), nan="track")


def tree_sums(graph: Graph, x: str | Tensor, width: int, trees: Sequence[Tree], n_groups: int = 1, *,
              float32_input: bool = False, leaf_scale: float = 1.0, zero_columns: int = 0,
              average: bool = False, batch_layout: bool | None = None) -> str:
    """``[N, n_groups + zero_columns]`` double: group ``k`` is ``((0 + v_k) + v_{k+G}) + ...``, the leaf
    values of trees ``k, k + G, k + 2G, ...`` (round-major order, as ``grouped_sum``) added by the
    ensemble itself, then ``zero_columns`` columns of zeros (no leaf adds to them).

    ``average``: each group then divided by the number of trees, by the ensemble itself (onnxruntime's
    AVERAGE is the same sum, then one division: a forest's mean, bit for bit).

    ``leaf_scale`` (a power of two, e.g. -1 for the negated sum a sigmoid needs) multiplies every leaf:
    scaling by a power of two commutes with rounding, so each group comes out as exactly
    ``leaf_scale * sum`` without a node to multiply it."""
    tables = _tables(trees)
    if any(v.shape[1] != 1 for v in tables):
        raise ExportError("tree_sums needs one value per leaf")
    if len(trees) % n_groups:
        raise ExportError(f"{len(trees)} trees do not split into {n_groups} groups")
    mantissa, _ = np.frexp(abs(leaf_scale))
    if mantissa != 0.5:
        raise ExportError(f"leaf_scale must be a power of two; got {leaf_scale!r}")
    weights = [v[:, 0] * leaf_scale for v in tables]
    if not all(np.array_equal(np.isfinite(w), np.isfinite(v[:, 0])) for w, v in zip(weights, tables, strict=True)):
        raise ExportError(f"leaf values overflow when scaled by {leaf_scale!r}")
    # A single sum (a regressor) keeps every split's own NaN side: scikit-learn sends NaN to the child with
    # more training samples, so reading the negated copy there makes that child onnxruntime's fall-through
    # (1000-row forest batch 8.7 instead of 12.0 ms; one row about +1 us, measured in docs/benchmarks.md).
    single_sum = n_groups == 1 and not zero_columns and leaf_scale == 1.0
    layout = single_sum if batch_layout is None else batch_layout
    x, trees = _read(x, _as_double(trees) if float32_input else trees, keep_nan_sides=layout)
    if average and (n_groups != 1 or zero_columns):
        raise ExportError("an averaged ensemble has one group")
    return ensemble_node(graph, x, width, trees, weights, [t % n_groups for t in range(len(trees))],
                         n_groups + zero_columns, average, nan="copy" if layout else "track")


def tree_vectors(graph: Graph, x: str | Tensor, width: int, trees: Sequence[Tree], *,
                 float32_input: bool = False) -> str:
    """``[N, T, K]`` double: row ``n``, tree ``t`` holds the K values of the leaf that row ``n`` reaches.
    Each leaf weighs its row number in a value table (exact in double) that ``Gather`` then reads. Every
    split keeps its own NaN side (the batch layout of ``tree_sums``' single sums: 1000 rows of a 3-class
    forest in 7.3 instead of 9.1 ms, one row about 0.2 us more; docs/export.md)."""
    tables = _tables(trees)
    if len({v.shape[1] for v in tables}) != 1:
        raise ExportError("the trees disagree on the number of values per leaf")
    x, trees = _read(x, _as_double(trees) if float32_input else trees, keep_nan_sides=True)
    rows, table, start = [], [], 0
    for t, v in zip(trees, tables, strict=True):
        is_leaf = np.asarray(t.left) < 0
        index = np.zeros(len(is_leaf))
        index[is_leaf] = start + np.arange(is_leaf.sum())
        rows.append(index)
        table.append(v[is_leaf])
        start += int(is_leaf.sum())
    position = ensemble_node(graph, x, width, trees, rows, list(range(len(trees))), len(trees))
    values = graph.const(np.concatenate(table), "leaf_values")
    rows_of_leaves = graph.cast(position, TensorProto.INT64)
    return graph.op("Gather", [values, rows_of_leaves], axis=0)  # type: ignore[return-value]


def tree_votes(graph: Graph, x: str | Tensor, width: int, trees: Sequence[Tree], *,
               float32_input: bool = False) -> str | None:
    """``[N, K]`` double: a forest's class fractions averaged in one pass when every leaf is pure (one 1.0 and
    zeros, as fully grown scikit-learn trees leave them); None otherwise. A pure leaf adds 1.0 to its class
    and ``AVERAGE`` divides the counts by the number of trees: whole numbers, exact in any order, so each
    probability is ``n_k / T`` rounded once, sklearn's value bit for bit (with ``n_jobs > 1`` too). Every
    split keeps its NaN side (the batch layout, as ``tree_vectors``)."""
    tables = _tables(trees)
    if len({v.shape[1] for v in tables}) != 1:
        raise ExportError("the trees disagree on the number of values per leaf")
    classes = []
    for t, v in zip(trees, tables, strict=True):
        leaves = v[np.asarray(t.left) < 0]
        if not (np.all((leaves == 0.0) | (leaves == 1.0)) and np.all(leaves.sum(axis=1) == 1.0)):
            return None
        classes.append(np.argmax(v, axis=1))
    x, trees = _read(x, _as_double(trees) if float32_input else trees, keep_nan_sides=True)
    ones = [np.ones(len(t.left)) for t in trees]
    return ensemble_node(graph, x, width, trees, ones, classes, tables[0].shape[1], average=True)


def _read(x: str | Tensor, trees: Sequence[Tree], keep_nan_sides: bool = False) -> tuple[str, Sequence[Tree]]:
    """The tensor the ensemble reads, and its trees: a scaler's input with moved thresholds when ``x``
    is a scaler's output (``Tensor.affine``); NaN routed right (no negated copy to read) in columns that
    cannot be NaN (``Tensor.nan``), unless ``keep_nan_sides``."""
    if isinstance(x, str):
        return x, trees
    if x.nan is not None and not keep_nan_sides:
        nan = x.may_be_nan()
        trees = [replace(t, missing_left=np.asarray(t.missing_left, bool) & nan[np.asarray(t.feature)])
                 for t in trees]
    if x.affine is None:
        return x.name, trees
    return x.affine.source, unscale(x.affine, trees)


def sequential_sum(graph: Graph, values: str, axis: int = 1, keepdims: bool = False) -> str:
    """Sum over ``axis`` strictly in index order, as a loop with ``+=`` does (the axis is dropped, or kept
    with length 1)."""
    running = graph.op("CumSum", [values, graph.const(np.array(axis, dtype=np.int64), "axis")])
    last = graph.const(np.array([-1] if keepdims else -1, dtype=np.int64), "last")
    return graph.op("Gather", [running, last], axis=axis)  # type: ignore[return-value]


def mean_over_trees(graph: Graph, vectors: str) -> str:
    """``[N, T, K]`` double -> ``[N, K]``: the trees added in order, then divided by ``T``, as a forest
    averages. onnxruntime's double ``ReduceMean`` over a middle axis is a sequential loop and one
    division (one node, where ``sequential_sum`` and a ``Div`` take three; the tests check the order).
    Its float reductions are vectorized, not in order: float sums use ``CumSum``."""
    axes = graph.const(np.array([1], dtype=np.int64), "axes")
    return graph.op("ReduceMean", [vectors, axes], keepdims=0)  # type: ignore[return-value]


def grouped_sum(graph: Graph, per_tree: str, n_groups: int) -> str:
    """``[N, R * K]`` in round-major order (round 0: groups 0..K-1, round 1: ...) -> ``[N, K]``, each group
    summed over its rounds in order."""
    if n_groups == 1:
        return sequential_sum(graph, per_tree, axis=1, keepdims=True)
    return sequential_sum(graph, reshape(graph, per_tree, [0, -1, n_groups]), axis=1)


def reshape(graph: Graph, x: str, shape: Sequence[int]) -> str:
    target = graph.const(np.array(shape, dtype=np.int64), "shape")
    return graph.op("Reshape", [x, target])  # type: ignore[return-value]


def _tables(trees: Sequence[Tree]) -> list[np.ndarray]:
    return [np.asarray(t.value, dtype=np.float64).reshape(len(t.left), -1) for t in trees]


def _as_double(trees: Sequence[Tree]) -> list[Tree]:
    return [replace(t, threshold=float32_leq(t.threshold)) for t in trees]


def float32_leq(threshold: np.ndarray) -> np.ndarray:
    """The largest double ``d`` with ``float32(d) <= threshold``: a double ``x`` passes ``float32(x) <= t``
    exactly when ``x <= d``. Rounding is monotonic, so the test cuts at the midpoint between the float32
    at or below ``t`` and the next one up, a midpoint that stays left when ties-to-even rounds it down."""
    t = np.asarray(threshold, dtype=np.float64)
    below = _float32_floor(t)
    with np.errstate(over="ignore"):
        above = np.nextafter(below, np.float32(np.inf))
        lo, hi = below.astype(np.float64), above.astype(np.float64)
        top, half_ulp = float(np.finfo(np.float32).max), 2.0**103  # float32's largest value, its half ulp
        mid = np.where(np.isinf(hi), top + half_ulp, np.where(np.isinf(lo), -top - half_ulp, (lo + hi) / 2))
        rounds_down = mid.astype(np.float32).astype(np.float64) <= t
    return np.where(np.isposinf(t), np.inf, np.where(rounds_down, mid, np.nextafter(mid, -np.inf)))


def _float32_floor(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each double ``threshold``."""
    t = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    return np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)


__all__ = [
    "Tree",
    "constant_tree",
    "float32_below",
    "float32_leq",
    "grouped_sum",
    "mean_over_trees",
    "reshape",
    "sequential_sum",
    "tree_sums",
    "tree_values",
    "tree_vectors",
    "tree_votes",
]
