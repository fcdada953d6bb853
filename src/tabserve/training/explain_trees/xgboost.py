"""XGBoost (a scikit-learn wrapper or a native Booster, gbtree) as a TreeSHAP table, from its JSON model: the
margin, with ``sum_hessian`` as covers and the trees ``predict`` uses (the best iteration, if any)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tabserve.core.explain.artifact import Space
from tabserve.core.manifest import Task
from tabserve.training.explain_trees.estimator import Estimator, ExplainUnsupported, TreeTable, as_2d, labels

XGBOOST_IDENTITY = ("reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror")


def read_xgboost(model: Any, task: Task) -> Estimator:
    from tabserve.training.convert.trees import float32_below
    from tabserve.training.convert.xgboost import xgboost_base_margin, xgboost_json

    booster, learner, used = xgboost_json(model)
    objective = learner["objective"]["name"]
    # any objective: the margin is the trees' sum whatever the link (checked against output_margin below)
    model_json = learner["gradient_booster"]["model"]
    base = xgboost_base_margin(booster, learner)
    trees = TreeTable(1)
    for j in used:
        t = model_json["trees"][j]
        if any(int(s) != 0 for s in t.get("split_type", [])):
            raise ExplainUnsupported("XGBoost categorical splits cannot be explained")
        left = np.array(t["left_children"])
        condition = np.array(t["split_conditions"], dtype=np.float32)
        threshold = np.where(left < 0, 0.0, float32_below(condition))
        # XGBoost holds covers as float32: the JSON's shortest decimal read as float64 is a slightly other
        # number (1e-8 relative), which moves a classifier's SHAP values (non-integer hessians) by as much
        cover = np.array(t["sum_hessian"], dtype=np.float32).astype(np.float64)
        trees.add(t["split_indices"], threshold, left, t["right_children"], np.array(t["default_left"], dtype=bool),
                  cover, condition.astype(np.float64), int(model_json["tree_info"][j]))
    n_features = int(learner["learner_model_param"]["num_feature"])
    ens = trees.ensemble(base, n_features, float32_input=True)
    # predict counts boosting rounds, each of num_parallel_tree trees per class: the round that ends at the
    # last tree used (not the number of class-0 trees, which is num_parallel_tree times more)
    rounds = list(model_json["iteration_indptr"]).index(len(used))

    def raw(m: Any, x: np.ndarray) -> np.ndarray:
        import xgboost

        margin = booster.predict(xgboost.DMatrix(x), output_margin=True, validate_features=False,
                                 iteration_range=(0, rounds))
        return as_2d(margin)

    space: Space = "value" if objective in XGBOOST_IDENTITY else "margin"
    return Estimator("tree", space, labels(model, task, len(base)), raw, ens)
