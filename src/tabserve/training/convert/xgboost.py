"""XGBoost, as a scikit-learn wrapper or a native Booster, reproduced bit for bit.

From ``save_raw('json')``, gbtree (the sklearn wrapper's best iteration after early stopping, a native
Booster's every tree): X is rounded to float32 and a split sends ``x < t`` left (float32),
NaN by ``default_left``. The margin is float32 ``base + t0 + t1 + ...`` per class, in tree order;
the base margin is read from XGBoost itself (a copy of the model with zero leaves predicts it), so
no ``logf`` has to be reproduced. Sigmoid and softmax are float32 with glibc's ``expf`` (``links``).
Outputs are those float32 values, exactly, as double.

Native categorical splits (``BRANCH_MEMBER``, the input built by ``categorical.categorical_input``):
``split_type`` 1; ``categories`` of the node go right: the float32 value cast to int, a negative
one invalid (left), NaN by ``default_left``, any other code left; text is looked up in the model's ``cats``
(XGBoost >= 3.1 stores them); XGBoost refuses a category it did not see, and so does the bundle. A model
saved by an older XGBoost (2.x: no ``cats``) holds only codes, the positions in whatever ``category`` dtype
a DataFrame had when it predicts: it takes numbers (codes) only, and text columns are refused.

Thresholds for adversarial rows: XGBoost's float32 values (their float32 neighbours decide).

Tolerance (measured on the tests' data, threshold and NaN rows): 0 (every float32 bit); the
emulated ``expf`` can differ from glibc's in the last float bit with probability about 2**-29 per
value (never seen in 36 million), and XGBoost built against another C library (macOS) uses another
``expf``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import pairwise
from typing import Any

import numpy as np
from onnx import TensorProto

from tabserve.errors import ExportError
from tabserve.training.convert.categorical import (
    CategoricalColumn,
    categorical_input,
    member_probes,
    on_columns,
)
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.links import binary_probabilities, float32_sigmoid, float32_softmax
from tabserve.training.convert.registry import ClassScores, Prediction, register, single_tensor
from tabserve.training.convert.trees import (
    Tree,
    constant_tree,
    float32_below,
    grouped_sum,
    sequential_sum,
    tree_values,
)

XGBOOST_IDENTITY = ("reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror")


def xgboost_json(model: Any) -> tuple[Any, dict[str, Any], list[int]]:
    """(booster, its JSON model, the indices of the trees predict uses)."""
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    learner = json.loads(booster.save_raw(raw_format="json"))["learner"]
    name = learner["gradient_booster"]["name"]
    if name != "gbtree":
        raise ExportError(f"XGBoost booster {name!r} cannot be exported; use booster='gbtree'")
    if int(learner["learner_model_param"].get("num_target", "1")) != 1:
        raise ExportError("XGBoost multi-target models cannot be exported")
    trees = learner["gradient_booster"]["model"]
    bounds = trees["iteration_indptr"]
    end = len(bounds) - 1
    if booster is not model:  # the scikit-learn wrapper predicts with the best iteration, if any
        try:
            end = model.best_iteration + 1
        except AttributeError:
            pass
    return booster, learner, list(range(bounds[end]))


def _xgboost_tree(t: dict[str, Any]) -> Tree:
    left, right = np.array(t["left_children"]), np.array(t["right_children"])
    condition = np.array(t["split_conditions"], dtype=np.float32)
    tree = Tree(np.array(t["split_indices"]), np.where(left < 0, 0.0, float32_below(condition)), left, right,
                np.array(t["default_left"], dtype=bool), condition.astype(np.float64))
    nodes = t.get("categories_nodes") or []
    if not nodes:
        return tree
    member: list[np.ndarray | None] = [None] * len(left)
    threshold, missing_left = tree.threshold.copy(), tree.missing_left.copy()
    cats = np.array(t["categories"], dtype=np.float64)
    for i, start, size in zip(nodes, t["categories_segments"], t["categories_sizes"], strict=True):
        member[i] = cats[start:start + size]  # these go right: the tree's left is XGBoost's right child
        left[i], right[i] = right[i], left[i]
        threshold[i], missing_left[i] = 0.0, not missing_left[i]
    return replace(tree, left=left, right=right, threshold=threshold, missing_left=missing_left,
                   member=tuple(member))


# XGBoost's re-coding of a DataFrame refuses a category it did not see in fit ("Found a category not in the
# training set", 3.2.0; some frames were re-coded to code 0 instead): the bundle refuses unseen categories
# (``handle_unknown='error'``), so this code is never looked up through the server; NaN reads it as missing.
_XGBOOST_UNSEEN = np.nan


# the first XGBoost that saves a DataFrame's categories in its model ("cats"); before it, only codes
XGBOOST_CATEGORIES_SINCE = "3.1"


def xgboost_stores_categories(model: Any) -> bool:
    """Whether the XGBoost model holds its categories (saved by XGBoost >= 3.1): without them a text
    category cannot be mapped to the code the model splits on."""
    return _stores_categories(xgboost_json(model)[1])


def _stores_categories(learner: dict[str, Any]) -> bool:
    return "cats" in learner["gradient_booster"]["model"]


def xgboost_without_categories(columns: Any) -> ExportError:
    """The refusal of text for an XGBoost model that holds no categories (``columns``: names or numbers)."""
    return ExportError(
        f"the XGBoost model holds no category names for its categorical column(s) {columns}: XGBoost before "
        f"{XGBOOST_CATEGORIES_SINCE} does not save a DataFrame's categories, so text cannot be mapped to the "
        f"codes it splits on; fit and save the model with XGBoost >= {XGBOOST_CATEGORIES_SINCE}, or give "
        "those columns as numbers (the codes)")


def xgboost_categorical(model: Any) -> dict[int, CategoricalColumn]:
    """The native categorical input columns of an XGBoost model (scikit-learn's or a Booster)."""
    return _xgboost_categorical(xgboost_json(model)[1])


def _xgboost_categorical(learner: dict[str, Any]) -> dict[int, CategoricalColumn]:
    """The columns of feature type 'c', with their categories where the model stores them (text)."""
    types = learner.get("feature_types") or []
    encoded = learner["gradient_booster"]["model"].get("cats", {}).get("enc") or []
    out = {}
    for f, kind in enumerate(types):
        if kind != "c":
            continue
        enc = encoded[f] if f < len(encoded) else {}
        offsets, values = enc.get("offsets") or [], enc.get("values") or []
        if offsets:
            names = tuple(bytes(values[a:b]).decode("utf-8") for a, b in pairwise(offsets))
            out[f] = CategoricalColumn(names, _XGBOOST_UNSEEN, "float32")
        elif values:  # a category dtype of numbers: a number is looked up among them (another one: missing)
            out[f] = CategoricalColumn(tuple(values), np.nan, "exact")
        else:
            out[f] = CategoricalColumn(None, _XGBOOST_UNSEEN, "float32")
    return out


def xgboost_base_margin(booster: Any, learner: dict[str, Any]) -> np.ndarray:
    """XGBoost's own margin before any tree, from a copy of the model whose leaves are all zero."""
    import xgboost

    model = json.loads(booster.save_raw(raw_format="json"))
    for t in model["learner"]["gradient_booster"]["model"]["trees"]:
        for i, child in enumerate(t["left_children"]):
            if child < 0:
                t["split_conditions"][i] = t["base_weights"][i] = 0.0
    zero = xgboost.Booster(model_file=bytearray(json.dumps(model).encode()))
    row = xgboost.DMatrix(np.zeros((1, int(learner["learner_model_param"]["num_feature"])), dtype=np.float32))
    margin = zero.predict(row, output_margin=True, validate_features=False)
    return np.asarray(margin, dtype=np.float32).reshape(-1)


def _xgboost_thresholds(model: Any) -> dict[int, np.ndarray]:
    _, learner, used = xgboost_json(model)
    trees = learner["gradient_booster"]["model"]["trees"]
    found: dict[int, set[float]] = {}
    for j in used:
        t = trees[j]
        kinds = t.get("split_type") or [0] * len(t["left_children"])
        for f, c, child, kind in zip(t["split_indices"], t["split_conditions"], t["left_children"], kinds,
                                     strict=True):
            if child >= 0 and not kind:
                found.setdefault(int(f), set()).add(float(np.float32(c)))
    parsed = [_xgboost_tree(trees[j]) for j in used]
    categorical = _xgboost_categorical(learner)
    for f in categorical:
        found[f] = set(member_probes(parsed, f, categorical).tolist())
    return {f: np.array(sorted(ts)) for f, ts in sorted(found.items())}


@register("xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBClassifier", "xgboost.core.Booster",
          thresholds=_xgboost_thresholds, takes_table=True)
def convert_xgboost(graph: Graph, model: Any, x: Tensor | Table) -> Prediction | ClassScores:
    missing = getattr(model, "missing", np.nan)
    if missing is not None and not np.isnan(missing):
        raise ExportError(f"XGBoost with missing={missing!r} cannot be exported; only NaN can mark missing "
                          "values")
    booster, learner, used = xgboost_json(model)
    n_features = int(learner["learner_model_param"]["num_feature"])
    width = x.width if isinstance(x, Tensor) else len(x.columns)
    if n_features != width:
        raise ExportError(f"the XGBoost model was trained on {n_features} features but gets {width}")
    categorical = _xgboost_categorical(learner)
    positions = list(range(width))
    if categorical and not _stores_categories(learner):
        columns = list(x.columns.items()) if isinstance(x, Table) else [(f"x{i}", (x, i)) for i in range(width)]
        text = [name for i, (name, (tensor, _)) in enumerate(columns) if i in categorical and tensor.dtype == "str"]
        if text:
            raise xgboost_without_categories(", ".join(repr(n) for n in text))
    if categorical:
        x, positions = categorical_input(graph, x, categorical)
    x = x if isinstance(x, Tensor) else single_tensor(x, "the XGBoost model")
    objective = learner["objective"]["name"]
    supported = (*XGBOOST_IDENTITY, "reg:logistic", "binary:logistic", "multi:softprob")
    if objective not in supported:
        raise ExportError(f"XGBoost objective {objective!r} cannot be exported; supported: "
                          f"{', '.join(supported)}")
    all_trees = learner["gradient_booster"]["model"]["trees"]
    group = learner["gradient_booster"]["model"]["tree_info"]
    base = xgboost_base_margin(booster, learner)
    by_group = [[j for j in used if group[j] == g] for g in range(len(base))]
    if len({len(g) for g in by_group}) != 1:
        raise ExportError("XGBoost classes have different numbers of trees; cannot export")
    trees = [constant_tree(float(b)) for b in base]
    trees += on_columns([_xgboost_tree(all_trees[g[r]]) for r in range(len(by_group[0])) for g in by_group],
                        positions)
    values = tree_values(graph, x, x.width, trees, float32_input=True)  # exact float32 leaf values
    if objective in XGBOOST_IDENTITY + ("reg:logistic",):  # one margin: summed straight to [N]
        margin = sequential_sum(graph, graph.cast(values, TensorProto.FLOAT), axis=1)  # float32, in order
        if objective == "reg:logistic":
            margin = float32_sigmoid(graph, margin)
        return Prediction(graph.cast(margin, TensorProto.DOUBLE), flat=True)
    margin = grouped_sum(graph, graph.cast(values, TensorProto.FLOAT), len(base))  # float32 sums, in order

    def double(name: str) -> str:
        return graph.cast(name, TensorProto.DOUBLE)

    classes = list(getattr(model, "classes_", range(max(len(base), 2))))
    if objective == "multi:softprob":
        return ClassScores(double(float32_softmax(graph, margin)), classes)
    p = float32_sigmoid(graph, margin)
    # XGBClassifier: class 1 where p > 0.5, which is where p > 1 - p (exact in float32 for p >= 0.5)
    return ClassScores(double(binary_probabilities(graph, p, np.float32)), classes)


__all__ = ["XGBOOST_CATEGORIES_SINCE", "XGBOOST_IDENTITY", "convert_xgboost", "xgboost_base_margin",
           "xgboost_categorical", "xgboost_json", "xgboost_stores_categories", "xgboost_without_categories"]
