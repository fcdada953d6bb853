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
Outputs are those float32 values, exactly, as double.

Native categorical splits (``BRANCH_MEMBER``, the input built by ``trees.categorical_input``). LightGBM
(``decision_type '=='``, the categories of ``threshold`` 'a||b' go left): a number is cast to int (toward
zero); NaN, a negative number or any other code goes right. Text is looked up in ``pandas_categorical``
(the k-th list for the k-th categorical column), an unseen category reads as missing (pandas' code -1).
XGBoost (``split_type`` 1; ``categories`` of the node go right): the float32 value cast to int, a negative
one invalid (left), NaN by ``default_left``, any other code left; text is looked up in the model's ``cats``
(XGBoost >= 3.1 stores them); XGBoost refuses a category it did not see, and so does the bundle. A model
saved by an older XGBoost (2.x: no ``cats``) holds only codes, the positions in whatever ``category`` dtype
a DataFrame had when it predicts: it takes numbers (codes) only, and text columns are refused.

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
from itertools import pairwise
from typing import Any

import numpy as np
from onnx import TensorProto

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Affine, Graph, Table, Tensor
from tabserve.training.convert.links import (
    binary_from_negated,
    binary_probabilities,
    float32_sigmoid,
    float32_softmax,
    softmax,
)
from tabserve.training.convert.registry import ClassScores, Prediction, register, single_tensor
from tabserve.training.convert.trees import (
    CategoricalColumn,
    Tree,
    categorical_input,
    constant_tree,
    float32_below,
    grouped_sum,
    member_probes,
    on_columns,
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
    member: list[np.ndarray | None] = []
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
            missing_left.append(False), value.append(float(node["leaf_value"])), member.append(None)
            continue
        if node["decision_type"] == "==":  # the categories in 'a||b' go left; anything else right
            if node["missing_type"] == "Zero":
                raise ExportError("LightGBM categorical splits with zero_as_missing=True cannot be exported")
            member.append(np.array([float(c) for c in str(node["threshold"]).split("||")]))
            feature.append(int(node["split_feature"])), threshold.append(0.0), left.append(-1), right.append(-1)
            value.append(0.0), missing_left.append(False)
            stack += [(node["right_child"], i, False), (node["left_child"], i, True)]
            continue
        member.append(None)
        f, t, kind = int(node["split_feature"]), float(node["threshold"]), node["missing_type"]
        t = np.inf if t >= _DUMPED_INF else -np.inf if t <= -_DUMPED_INF else t
        if kind == "Zero":
            f = width + parsed.zero_features.setdefault(f, len(parsed.zero_features))
        elif -K_ZERO <= t < K_ZERO:
            parsed.snap = True
        feature.append(f), threshold.append(t), left.append(-1), right.append(-1), value.append(0.0)
        missing_left.append(0.0 <= t if kind == "None" else bool(node["default_left"]))
        stack += [(node["right_child"], i, False), (node["left_child"], i, True)]
    tree = Tree(*(np.array(a) for a in (feature, threshold, left, right, missing_left, value)))
    return replace(tree, member=tuple(member)) if any(m is not None for m in member) else tree


def _lightgbm_categorical(parsed: _LightGBM) -> dict[int, CategoricalColumn]:
    """The categorical input columns (a categorical split, or categories in ``feature_infos``), with the
    pandas categories of each when the model was fitted on a DataFrame."""
    infos = list(parsed.dump.get("feature_infos", {}).values())
    split = {int(f) for t in parsed.trees for f, m in zip(t.feature, t.member or (), strict=False) if m is not None}
    columns = sorted(split | {i for i, info in enumerate(infos) if isinstance(info, dict) and info.get("values")})
    names = parsed.dump.get("pandas_categorical") or []
    if names and len(names) != len(columns):
        names = []  # which list belongs to which column is unknown: numbers (codes) only
    out = {}
    for k, c in enumerate(columns):
        cats = tuple(names[k]) if names else None
        # integer categories (a category dtype of numbers): a number is looked up among them, as pandas does
        numeric = cats is not None and all(isinstance(v, int | float) and not isinstance(v, bool) for v in cats)
        out[c] = CategoricalColumn(cats, np.nan, "exact" if numeric else "trunc")
    return out


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
        for i in tree.splits[~tree.categorical[tree.splits]]:
            f = int(tree.feature[i])
            found.setdefault(column.get(f, f), set()).add(float(tree.threshold[i]))
    categorical = _lightgbm_categorical(parsed)
    for f in categorical:
        found[f] = set(member_probes(parsed.trees, f, categorical).tolist())
    return {f: np.array(sorted(ts)) for f, ts in sorted(found.items())}


@register("lightgbm.sklearn.LGBMRegressor", "lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster",
          thresholds=_lightgbm_thresholds, takes_table=True)
def convert_lightgbm(graph: Graph, model: Any, x: Tensor | Table) -> Prediction | ClassScores:
    parsed = _lightgbm(model)
    dump = parsed.dump
    width = x.width if isinstance(x, Tensor) else len(x.columns)
    if dump["max_feature_idx"] + 1 != width:
        raise ExportError(f"the LightGBM model was trained on {dump['max_feature_idx'] + 1} features but "
                          f"gets {width}")
    categorical = _lightgbm_categorical(parsed)
    if categorical:
        if parsed.zero_features:
            raise ExportError("LightGBM categorical features with zero_as_missing=True cannot be exported")
        x, positions = categorical_input(graph, x, categorical)
        parsed.trees = on_columns(parsed.trees, positions)
    x = x if isinstance(x, Tensor) else single_tensor(x, "the LightGBM model")
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


def lightgbm_categorical(model: Any) -> dict[int, CategoricalColumn]:
    """The native categorical input columns of a LightGBM model (scikit-learn's or a Booster)."""
    return _lightgbm_categorical(_lightgbm(model))


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


__all__ = ["XGBOOST_CATEGORIES_SINCE", "convert_lightgbm", "convert_xgboost", "lightgbm_categorical",
           "xgboost_base_margin", "xgboost_categorical", "xgboost_json", "xgboost_stores_categories",
           "xgboost_without_categories"]
