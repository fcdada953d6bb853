"""LightGBM, as a scikit-learn wrapper or a native Booster, reproduced bit for bit.

From ``Booster.dump_model()`` (the best iteration when there is one, as ``predict``): it compares
the double input with double thresholds, ``x <= t``, after reading ``|x| <= 1e-35f`` as 0 (its C API
drops such values from a row, measured); NaN per split ``missing_type``: 'None' reads NaN as 0,
'NaN' sends it to ``default_left``, 'Zero' sends NaN and zero there (the graph feeds those splits a
copy of the column where zero is NaN); a dumped threshold of +-1e300 is the infinity LightGBM
holds (its JSON writer clamps it, ``Common::AvoidInf``). Raw score ``0 + t0 + t1 + ...`` per class in
double, added by the ensemble (``trees.tree_sums``; the init score is in the first trees' leaves); binary
``1 / (1 + exp(-sigmoid * raw))``, multiclass softmax; labels are the argmax of the probabilities, as
``LGBMClassifier.predict``.

Native categorical splits (``BRANCH_MEMBER``, the input built by ``categorical.categorical_input``):
``decision_type '=='``, the categories of ``threshold`` 'a||b' go left; a number is cast to int (toward
zero); NaN, a negative number or any other code goes right. Text is looked up in ``pandas_categorical``
(the k-th list for the k-th categorical column), an unseen category reads as missing (pandas' code -1).

Thresholds for adversarial rows: LightGBM's doubles (the doubles next to them decide; zero-as-missing
columns add -1e-35, 0 and 1e-35).

Tolerance (measured on the tests' data, threshold and NaN rows): values 0, probabilities up to ~1e-14
relative (onnxruntime's double ``exp`` is within an ulp of glibc's, not always equal; see ``links`` for the
class-0 probability near 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tabserve.errors import ExportError
from tabserve.training.convert.categorical import (
    CategoricalColumn,
    categorical_input,
    member_probes,
    on_columns,
)
from tabserve.training.convert.graph import Affine, Graph, Table, Tensor
from tabserve.training.convert.links import binary_from_negated, softmax
from tabserve.training.convert.registry import ClassScores, Prediction, register, single_tensor
from tabserve.training.convert.trees import Tree, tree_sums

K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold
_DUMPED_INF = 1e300  # dump_model writes an infinite threshold (NaN-only splits) as +-1e300
LIGHTGBM_IDENTITY = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


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


def lightgbm_categorical(model: Any) -> dict[int, CategoricalColumn]:
    """The native categorical input columns of a LightGBM model (scikit-learn's or a Booster)."""
    return _lightgbm_categorical(_lightgbm(model))


__all__ = ["K_ZERO", "LIGHTGBM_IDENTITY", "convert_lightgbm", "lightgbm_categorical"]
