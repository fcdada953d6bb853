"""The ``TreeEnsemble`` node (ai.onnx.ml opset 5) that ``trees`` builds, tree by tree.

Every split is ``BRANCH_LEQ``: ``x <= t`` goes to the true branch, NaN fails it and takes the false one. A
split that sends NaN left either reads a negated copy of the input (``copy``: ``x <= t`` is
``not (-x <= prev(-t))``, so with the children swapped NaN lands left; one ``Concat(X, -X)`` for the
ensemble) or keeps its test and sets ``nodes_missing_value_tracks_true`` (``track``: no extra node).
Measured (docs/export.md): the copy makes large batches faster where the NaN side is the populated child
(regressors and forests), tracking makes one row faster (booster classifiers: 0.6 us a row).

A native categorical split (``Tree.member``) is ``BRANCH_MEMBER``: a value among its members goes to the true
(left) branch, any other value to the false one, NaN by tracking (never through the negated copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from onnx import numpy_helper

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph

if TYPE_CHECKING:
    from tabserve.training.convert.trees import Tree

ML = "ai.onnx.ml"
BRANCH_LEQ = 0
BRANCH_MEMBER = 6


def _signed(graph: Graph, x: str, trees: Sequence[Tree]) -> str:
    """``x`` followed by ``-x`` when some split sends NaN left (those splits read the negated copy)."""
    if not any(np.any((np.asarray(t.missing_left) & ~t.categorical)[t.splits]) for t in trees):
        return x
    return graph.op("Concat", [x, graph.op("Neg", [x])], axis=1)  # type: ignore[return-value]


def _skip_always_left(tree: Tree) -> Tree:
    """Drop splits that send every row left (threshold +inf, NaN left): no ``<=`` test says 'always'."""
    left, right = np.asarray(tree.left, np.int64), np.asarray(tree.right, np.int64)
    threshold = np.asarray(tree.threshold, np.float64)
    always = (left >= 0) & np.asarray(tree.missing_left, bool) & np.isposinf(threshold) & ~tree.categorical
    if not always.any():
        return tree
    to = np.arange(len(left))
    to[always] = left[always]
    while np.any(always[to]):
        to = to[to]
    return replace(tree, left=np.where(left >= 0, to[np.maximum(left, 0)], left),
                   right=np.where(right >= 0, to[np.maximum(right, 0)], right), root=int(to[tree.root]))


@dataclass
class _Nodes:
    """The TreeEnsemble attributes, filled tree by tree."""

    parts: dict[str, list[np.ndarray]] = field(default_factory=lambda: {k: [] for k in _PARTS})
    roots: list[int] = field(default_factory=list)
    n_nodes: int = 0
    n_leaves: int = 0

    def add(self, tree: Tree, weights: np.ndarray, target: int | np.ndarray, width: int, track: bool) -> None:
        """``target``: the output every leaf adds to, or one per node (read at leaves)."""
        tree = _skip_always_left(tree)
        targets = np.broadcast_to(np.asarray(target, np.int64), np.shape(weights)[:1])
        if tree.left[tree.root] < 0:  # a lone leaf: a split (x0 <= 0) whose two branches carry its value
            weights = np.array([0.0, weights[tree.root], weights[tree.root]])
            targets = np.full(3, targets[tree.root])
            tree = replace(tree, feature=np.zeros(3, np.int64), threshold=np.zeros(3),
                           left=np.array([1, -1, -1]), right=np.array([2, -1, -1]),
                           missing_left=np.zeros(3, bool), value=np.zeros(3), root=0, member=None)
        left, right = np.asarray(tree.left, np.int64), np.asarray(tree.right, np.int64)
        is_leaf = left < 0
        inner = np.flatnonzero(~is_leaf)
        threshold = np.asarray(tree.threshold, np.float64)[inner]
        tracked = np.asarray(tree.missing_left, bool)[inner]
        member = tree.categorical[inner]
        nan_left = np.zeros_like(tracked) if track else tracked & ~member  # read the negated copy
        true_child = np.where(nan_left, right[inner], left[inner])
        false_child = np.where(nan_left, left[inner], right[inner])
        node_id = np.cumsum(~is_leaf) - 1 + self.n_nodes
        leaf_id = np.cumsum(is_leaf) - 1 + self.n_leaves
        root = int(node_id[tree.root] - self.n_nodes)
        if is_leaf[true_child[root]] != is_leaf[false_child[root]]:
            a, b = true_child[root], false_child[root]
            if np.where(is_leaf[a], leaf_id[a], node_id[a]) == np.where(is_leaf[b], leaf_id[b], node_id[b]):
                # some onnxruntime versions read a root with equal true and false ids as a lone leaf
                self._extend(weight=np.zeros(1), target=np.zeros(1, np.int64))
                self.n_leaves += 1
                leaf_id += 1
        self._extend(
            feature=np.asarray(tree.feature, np.int64)[inner] + np.where(nan_left, width, 0),
            split=np.where(nan_left, np.nextafter(-threshold, -np.inf), threshold),
            true=np.where(is_leaf[true_child], leaf_id[true_child], node_id[true_child]),
            false=np.where(is_leaf[false_child], leaf_id[false_child], node_id[false_child]),
            true_leaf=is_leaf[true_child].astype(np.int64), false_leaf=is_leaf[false_child].astype(np.int64),
            weight=np.asarray(weights, np.float64)[is_leaf], target=targets[is_leaf],
            track=(tracked & (track | member)).astype(np.int64), mode=np.where(member, BRANCH_MEMBER, BRANCH_LEQ),
            members=np.concatenate([[*tree.member[i], np.nan] for i in inner[member]] or [np.zeros(0)]))
        self.roots.append(self.n_nodes + root)
        self.n_nodes += len(inner)
        self.n_leaves += int(is_leaf.sum())

    def _extend(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.parts[k].append(v)


_PARTS = ("feature", "split", "true", "false", "true_leaf", "false_leaf", "weight", "target", "track", "mode",
          "members")


def ensemble_node(graph: Graph, x: str, width: int, trees: Sequence[Tree], leaf_weights: Sequence[np.ndarray],
                  targets: Sequence[int | np.ndarray], n_targets: int, average: bool = False,
                  nan: Literal["copy", "track"] = "copy") -> str:
    """One TreeEnsemble summing its trees per target: tree ``t`` adds ``leaf_weights[t][leaf]`` to
    target ``targets[t]`` (or ``targets[t][leaf]``, one per node). ``nan``: how splits that send NaN left
    do it (module docstring)."""
    if not trees:
        raise ExportError("the model has no trees")
    nodes = _Nodes()
    for target, tree, weights in zip(targets, trees, leaf_weights, strict=True):
        nodes.add(tree, np.asarray(weights, np.float64), target, width, nan == "track")
    flat = {k: np.concatenate(v) for k, v in nodes.parts.items()}
    tracking = {"nodes_missing_value_tracks_true": flat["track"].tolist()} if flat["track"].any() else {}
    if len(flat["members"]):  # membership_values: each member node's values, in node order, NaN after each
        tracking["membership_values"] = numpy_helper.from_array(flat["members"], "membership_values")
    return graph.op(  # type: ignore[return-value]
        "TreeEnsemble", [x if nan == "track" else _signed(graph, x, trees)], domain=ML, base="tree_leaves",
        n_targets=n_targets, aggregate_function=0 if average else 1, post_transform=0, tree_roots=nodes.roots,
        nodes_featureids=flat["feature"].tolist(),
        nodes_splits=numpy_helper.from_array(flat["split"], "nodes_splits"),
        nodes_modes=numpy_helper.from_array(flat["mode"].astype(np.uint8), "nodes_modes"),
        nodes_truenodeids=flat["true"].tolist(), nodes_falsenodeids=flat["false"].tolist(),
        nodes_trueleafs=flat["true_leaf"].tolist(), nodes_falseleafs=flat["false_leaf"].tolist(),
        leaf_targetids=flat["target"].astype(np.int64).tolist(),
        leaf_weights=numpy_helper.from_array(flat["weight"], "leaf_weights"), **tracking,
    )


__all__ = ["BRANCH_LEQ", "BRANCH_MEMBER", "ML", "ensemble_node"]
