"""LightGBM (a scikit-learn wrapper or a native Booster) as a TreeSHAP table, from ``dump_model()``: the raw
score, with ``internal_count``/``leaf_count`` as covers and zero-as-missing splits marked."""

from __future__ import annotations

from typing import Any

import numpy as np

from tabserve.core.explain.artifact import Space
from tabserve.core.manifest import Task
from tabserve.training.explain_trees.estimator import Estimator, ExplainUnsupported, TreeTable, as_2d, labels

LIGHTGBM_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


def read_lightgbm(model: Any, task: Task) -> Estimator:
    booster = getattr(model, "booster_", None) or model
    dump = booster.dump_model()
    if dump.get("average_output"):
        raise ExplainUnsupported("LightGBM boosting='rf' cannot be explained")
    objective, *params = str(dump["objective"]).split()
    k = int(dump["num_tree_per_iteration"])
    # any objective: the raw score is the trees' sum whatever the link (checked against raw_score below)
    trees = TreeTable(1)
    for i, info in enumerate(dump["tree_info"]):
        feature, threshold, left, right, missing_left, cover, value, zero = _lightgbm_tree(info["tree_structure"])
        trees.add(feature, threshold, left, right, missing_left, cover, value, i % k, zero)
    ens = trees.ensemble(np.zeros(k), int(dump["max_feature_idx"]) + 1, snap_zero=True)

    def raw(m: Any, x: np.ndarray) -> np.ndarray:
        return as_2d(booster.predict(x, raw_score=True))

    space: Space = "value" if objective in LIGHTGBM_IDENTITY and not params else "margin"
    return Estimator("tree", space, labels(model, task, k), raw, ens)


def _lightgbm_tree(root: dict[str, Any]) -> tuple[list[Any], ...]:
    feature, threshold, left, right, missing_left, cover, value, zero = ([] for _ in range(8))
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, True)]
    while stack:
        node, parent, is_left = stack.pop()
        i = len(left)
        if parent >= 0:
            (left if is_left else right)[parent] = i
        left.append(-1), right.append(-1)
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ExplainUnsupported("LightGBM linear trees cannot be explained")
            feature.append(0), threshold.append(0.0), missing_left.append(False), zero.append(False)
            cover.append(float(node.get("leaf_count", 0))), value.append(float(node["leaf_value"]))
            continue
        if node["decision_type"] != "<=":
            raise ExplainUnsupported("LightGBM categorical splits cannot be explained")
        t, kind = float(node["threshold"]), node["missing_type"]
        t = np.inf if t >= 1e300 else -np.inf if t <= -1e300 else t  # dump_model clamps infinities
        feature.append(int(node["split_feature"])), threshold.append(t), value.append(0.0)
        cover.append(float(node.get("internal_count", 0))), zero.append(kind == "Zero")
        missing_left.append(0.0 <= t if kind == "None" else bool(node["default_left"]))
        stack += [(node["right_child"], i, False), (node["left_child"], i, True)]
    return feature, threshold, left, right, missing_left, cover, value, zero
