"""IsolationForest explained in path-length space (the score itself is not a sum over features)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tabserve.core.manifest import Task
from tabserve.training.explain_trees.estimator import Estimator, TreeTable


def isolation(model: Any, task: Task) -> Estimator:
    """IsolationForest in path-length space: its trees' leaf depths (``depth + c(n_node_samples) - 1``, as
    ``score_samples`` adds them) over the number of trees, so that the contributions add up to the row's mean
    path length. The score, ``-2 ** -(mean path length / c(max_samples))``, falls as that length grows: a
    feature whose contribution shortens the path makes the row more abnormal. The score itself is not a sum
    over features and is not explained."""
    scale = 1.0 / len(model.estimators_)
    trees = TreeTable(1)
    members = zip(model.estimators_, model.estimators_features_, strict=True)
    for i, (member, columns) in enumerate(members):
        t = member.tree_
        split = t.children_left >= 0
        feature = np.where(split, np.asarray(columns, np.int64)[np.where(split, t.feature, 0)], -1)
        depth = model._decision_path_lengths[i] + model._average_path_length_per_tree[i] - 1.0
        trees.add(feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left,
                  t.weighted_n_node_samples, depth * scale, 0)
    ens = trees.ensemble(np.zeros(1), model.n_features_in_, float32_input=True)
    return Estimator("tree", "path_length", ["path_length"], _mean_path_length, ens)


def _mean_path_length(model: Any, x: Any) -> np.ndarray:
    """What ``score_samples`` computes before its last step: the leaf depths, tree by tree, over the trees."""
    x = np.asarray(x, dtype=np.float32)
    total = np.zeros(len(x))
    for i, (tree, columns) in enumerate(zip(model.estimators_, model.estimators_features_, strict=True)):
        leaves = tree.apply(x[:, columns])
        total += model._decision_path_lengths[i][leaves] + model._average_path_length_per_tree[i][leaves] - 1.0
    return (total / len(model.estimators_)).reshape(-1, 1)
