"""LightGBM and XGBoost, as scikit-learn wrappers or native Boosters, reproduced bit for bit.

LightGBM (``Booster.dump_model()``; the best iteration when there is one, as ``predict``): it compares
the double input with double thresholds, ``x <= t``, after reading ``|x| <= 1e-35f`` as 0 (its C API
drops such values from a row, measured); NaN per split ``missing_type``: 'None' reads NaN as 0,
'NaN' sends it to ``default_left``, 'Zero' sends NaN and zero there (the graph feeds those splits a
copy of the column where zero is NaN); a dumped threshold of +-1e300 is the infinity LightGBM
holds (its JSON writer clamps it, ``Common::AvoidInf``). Raw score ``0 + t0 + t1 + ...`` per class in
double, added by the ensemble (``trees.tree_sums``; the init score is in the first trees' leaves); binary ``1 / (1 + exp(-sigmoid * raw))``,
multiclass softmax; labels are the argmax of the probabilities, as ``LGBMClassifier.predict``.

XGBoost (``save_raw('json')``, gbtree; the sklearn wrapper's best iteration after early stopping,
a native Booster's every tree): X is rounded to float32 and a split sends ``x < t`` left (float32),
NaN by ``default_left``. The margin is float32 ``base + t0 + t1 + ...`` per class, in tree order;
the base margin is read from XGBoost itself (a copy of the model with zero leaves predicts it), so
no ``logf`` has to be reproduced. Sigmoid and softmax are float32 with glibc's ``expf`` (``links``).
Outputs are those float32 values, exactly, as double. Categorical splits are refused by both.

Thresholds for adversarial rows: LightGBM's doubles (the doubles next to them decide; zero-as-missing
columns add -1e-35, 0 and 1e-35), XGBoost's float32 values (their float32 neighbours decide).

Tolerance (measured on the tests' data, threshold and NaN rows): XGBoost 0 (every float32 bit); the
emulated ``expf`` can differ from glibc's in the last float bit with probability about 2**-29 per
value (never seen in 36 million), and XGBoost built against another C library (macOS) uses another
``expf``. LightGBM: values 0, probabilities up to ~1e-14 relative (onnxruntime's double ``exp`` is
within an ulp of glibc's, not always equal; see ``links`` for the class-0 probability near 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from onnx import TensorProto

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Affine, Graph, Tensor
from tabserve.training.convert.links import (
    binary_from_negated,
    binary_probabilities,
    float32_sigmoid,
    float32_softmax,
    softmax,
)
from tabserve.training.convert.registry import ClassScores, Prediction, register
from tabserve.training.convert.trees import (
    Tree,
    constant_tree,
    float32_below,
    grouped_sum,
    sequential_sum,
    tree_sums,
    tree_values,
)

K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold
_DUMPED_INF = 1e300  # dump_model writes an infinite threshold (NaN-only splits) as +-1e300
LIGHTGBM_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")
XGBOOST_IDENTITY = ("reg:squarederror", "reg:squaredlogerror", "reg:absoluteerror", "reg:pseudohubererror")

# LightGBM ----------------------------------------------------------------------------------------------


@dataclass
class _LightGBM:
    dump: dict[str, Any]
    trees: list[Tree] = field(default_factory=list)
    zero_features: dict[int, int] = field(default_factory=dict)  # feature -> column in the zero-as-NaN copy
    snap: bool = False  # some split lies within (-1e-35, 1e-35): read |x| <= 1e-35 as 0 first


def _lightgbm(model: Any) -> _LightGBM:
    booster = getattr(model, "booster_", model)
    parsed = _LightGBM(booster.dump_model())
    if parsed.dump.get("average_output"):
        raise ExportError("LightGBM boosting='rf' (averaged trees) cannot be exported; use 'gbdt'")
    width = parsed.dump["max_feature_idx"] + 1
    for info in parsed.dump["tree_info"]:
        parsed.trees.append(_lightgbm_tree(info["tree_structure"], width, parsed))
    return parsed


def _lightgbm_tree(root: dict[str, Any], width: int, parsed: _LightGBM) -> Tree:
    feature, threshold, left, right, missing_left, value = [], [], [], [], [], []
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, -1, True)]
    while stack:
        node, parent, is_left = stack.pop()
        i = len(left)
        if parent >= 0:
            (left if is_left else right)[parent] = i
        if "leaf_value" in node:
            if "leaf_coeff" in node:
                raise ExportError("LightGBM linear trees (linear_tree=True) cannot be exported")
            feature.append(0), threshold.append(0.0), left.append(-1), right.append(-1)
            missing_left.append(False), value.append(float(node["leaf_value"]))
            continue
        if node["decision_type"] != "<=":
            raise ExportError(f"LightGBM categorical split on feature {node['split_feature']} cannot be "
                              "exported; encode that column (one-hot or ordinal) and train without "
                              "categorical_feature")
        f, t, kind = int(node["split_feature"]), float(node["threshold"]), node["missing_type"]
        t = np.inf if t >= _DUMPED_INF else -np.inf if t <= -_DUMPED_INF else t
        if kind == "Zero":
            f = width + parsed.zero_features.setdefault(f, len(parsed.zero_features))
        elif -K_ZERO <= t < K_ZERO:
            parsed.snap = True
        feature.append(f), threshold.append(t), left.append(-1), right.append(-1), value.append(0.0)
        missing_left.append(0.0 <= t if kind == "None" else bool(node["default_left"]))
        stack += [(node["right_child"], i, False), (node["left_child"], i, True)]
    return Tree(*(np.array(a) for a in (feature, threshold, left, right, missing_left, value)))


def _lightgbm_input(graph: Graph, x: Tensor, parsed: _LightGBM) -> tuple[Tensor, int]:
    c = graph.const
    if not parsed.zero_features:
        if not parsed.snap:
            return x, x.width
        # |x| <= 1e-35 read as 0 is monotone: the ensemble folds it into its thresholds (fold.unscale)
        affine = replace(x.affine or Affine(x.name), snap=K_ZERO)
        return replace(x, affine=affine), x.width
    base = x.name
    if parsed.snap:
        tiny = graph.op("LessOrEqual", [graph.op("Abs", [x.name]), c(np.array(K_ZERO))])
        base = graph.op("Where", [tiny, c(np.array(0.0)), x.name])  # type: ignore[assignment]
    columns = graph.op("Gather", [x.name, c(np.array(list(parsed.zero_features), dtype=np.int64))], axis=1)
    missing = graph.op("Or", [graph.op("IsNaN", [columns]),
                              graph.op("LessOrEqual", [graph.op("Abs", [columns]), c(np.array(K_ZERO))])])
    zero_as_nan = graph.op("Where", [missing, c(np.array(np.nan)), columns])
    joined = graph.op("Concat", [base, zero_as_nan], axis=1)
    nan = (*x.may_be_nan().tolist(), *(True,) * len(parsed.zero_features))
    return Tensor(joined, x.width + len(parsed.zero_features), nan=nan), x.width + len(parsed.zero_features)  # type: ignore[arg-type]


def _lightgbm_thresholds(model: Any) -> dict[int, np.ndarray]:
    parsed = _lightgbm(model)
    width = parsed.dump["max_feature_idx"] + 1
    column = {width + k: f for f, k in parsed.zero_features.items()}
    found: dict[int, set[float]] = {f: {-K_ZERO, 0.0, K_ZERO} for f in parsed.zero_features}
    for tree in parsed.trees:
        for i in tree.splits:
            f = int(tree.feature[i])
            found.setdefault(column.get(f, f), set()).add(float(tree.threshold[i]))
    return {f: np.array(sorted(ts)) for f, ts in sorted(found.items())}


@register("lightgbm.sklearn.LGBMRegressor", "lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster",
          thresholds=_lightgbm_thresholds)
def convert_lightgbm(graph: Graph, model: Any, x: Tensor) -> Prediction | ClassScores:
    parsed = _lightgbm(model)
    dump = parsed.dump
    if dump["max_feature_idx"] + 1 != x.width:
        raise ExportError(f"the LightGBM model was trained on {dump['max_feature_idx'] + 1} features but "
                          f"gets {x.width}")
    objective, *params = str(dump["objective"]).split()
    k = int(dump["num_tree_per_iteration"])
    tensor, width = _lightgbm_input(graph, x, parsed)
    if objective in LIGHTGBM_IDENTITY and not params:
        return Prediction(tree_sums(graph, tensor, width, parsed.trees, k))
    classes = list(getattr(model, "classes_", range(max(k, 2))))
    if objective == "binary":
        scale = float(dict(p.split(":") for p in params).get("sigmoid", 1.0))
        pair = tree_sums(graph, tensor, width, parsed.trees, leaf_scale=-1.0, zero_columns=1)  # [-raw, 0]
        return ClassScores(binary_from_negated(graph, pair, scale), classes)
    raw = tree_sums(graph, tensor, width, parsed.trees, k)
    if objective == "multiclass":
        return ClassScores(softmax(graph, raw), classes)
    raise ExportError(f"LightGBM objective {dump['objective']!r} cannot be exported; supported: "
                      f"{', '.join(LIGHTGBM_IDENTITY)}, binary, multiclass")


# XGBoost -----------------------------------------------------------------------------------------------


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
    if any(int(s) != 0 for s in t.get("split_type", [])) or t.get("categories"):
        raise ExportError("XGBoost categorical splits (enable_categorical=True) cannot be exported; encode "
                          "those columns numerically")
    left, right = np.array(t["left_children"]), np.array(t["right_children"])
    condition = np.array(t["split_conditions"], dtype=np.float32)
    return Tree(np.array(t["split_indices"]), np.where(left < 0, 0.0, float32_below(condition)), left, right,
                np.array(t["default_left"], dtype=bool), condition.astype(np.float64))


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
        for f, c, child in zip(t["split_indices"], t["split_conditions"], t["left_children"], strict=True):
            if child >= 0:
                found.setdefault(int(f), set()).add(float(np.float32(c)))
    return {f: np.array(sorted(ts)) for f, ts in sorted(found.items())}


@register("xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBClassifier", "xgboost.core.Booster",
          thresholds=_xgboost_thresholds)
def convert_xgboost(graph: Graph, model: Any, x: Tensor) -> Prediction | ClassScores:
    missing = getattr(model, "missing", np.nan)
    if missing is not None and not np.isnan(missing):
        raise ExportError(f"XGBoost with missing={missing!r} cannot be exported; only NaN can mark missing "
                          "values")
    booster, learner, used = xgboost_json(model)
    n_features = int(learner["learner_model_param"]["num_feature"])
    if n_features != x.width:
        raise ExportError(f"the XGBoost model was trained on {n_features} features but gets {x.width}")
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
    trees += [_xgboost_tree(all_trees[g[r]]) for r in range(len(by_group[0])) for g in by_group]
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


__all__ = ["convert_lightgbm", "convert_xgboost", "xgboost_base_margin", "xgboost_json"]
