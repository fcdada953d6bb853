"""CatBoost models (``CatBoostRegressor``, ``CatBoostClassifier``, a ``CatBoost`` loaded from .cbm) reproduced
bit for bit, from the model's own JSON export (``save_model(format="json")``).

CatBoost's trees are oblivious: every level of a tree tests one split, and the leaf is
``sum over levels l of (x[f_l] > border_l) << l`` (the first split is the lowest bit), the feature read as
float32 against a float32 border (``float32_input``: the double test is moved to ``float32_leq``). NaN
takes the feature's ``nan_value_treatment``: 'AsTrue' (nan_mode 'Max') sets the bit, 'AsFalse' (nan_mode
'Min') and 'AsIs' (no NaN when fitted, or 'Forbidden') leave it clear, as a comparison with NaN does. Each
tree becomes a full binary tree of ``2**depth`` leaves (the last split at the root), one per class for
several classes (a leaf's K values are stored together). The raw value is ``scale * sum + bias`` with the
trees added in order from 0 by the ensemble, as CatBoost's calcer does (measured with one onnxruntime thread,
as served: values 0 difference on 200 trees, probabilities <= 1.4e-15 relative; a multi-threaded session may
split the sum and move the last bit, ~1e-15, see ``trees``). Regression
losses that predict the raw value are passed through, Poisson and Tweedie predict ``exp(raw)``; Logloss
and CrossEntropy give ``[1 - p, p]``, ``p = 1 / (1 + exp(-raw))``, label 1 where ``raw > 0``;
MultiClass a softmax, the label the argmax of the raw values.

Refused before anything is written (``check_supported``): categorical features (the model keeps only
32-bit CityHash values of the categories, for one-hot splits, and counter statistics, CTRs, for the
others: a graph cannot recompute either from the text), text and embedding features, non-symmetric trees
(grow_policy 'Depthwise'/'Lossguide'), ranking, multi-target, uncertainty and one-vs-all losses.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.links import binary_from_negated, softmax
from tabserve.training.convert.registry import ClassScores, Prediction, register, single_tensor
from tabserve.training.convert.trees import Tree, constant_tree, tree_sums

IDENTITY = ("RMSE", "MAE", "Quantile", "Expectile", "Huber", "Lq", "MAPE", "LogLinQuantile", "LogCosh")
EXPONENT = ("Poisson", "Tweedie")
BINARY = ("Logloss", "CrossEntropy")
MULTICLASS = ("MultiClass",)
CLASSIFIERS = (*BINARY, *MULTICLASS)
SUPPORTED = (*IDENTITY, *EXPONENT, *CLASSIFIERS)
MAX_DEPTH = 12  # a full binary tree of 2**depth leaves per tree: 8191 nodes at depth 12
ENCODE_IT = ("encode the column yourself (OneHotEncoder/OrdinalEncoder in a scikit-learn Pipeline before "
             "CatBoost) or pass it as numbers")


@dataclass(frozen=True, slots=True)
class Parsed:
    """A CatBoost model as its JSON export describes it."""

    trees: list[Tree]  # round-major: tree t of class k is trees[t * dimensions + k]
    dimensions: int  # values per leaf: 1, or the number of classes
    scale: float
    bias: np.ndarray  # [dimensions]
    loss: str
    width: int  # float features the model takes
    thresholds: dict[int, np.ndarray]  # per feature, the borders its splits use


def loss_name(model: Any) -> str:
    """The model's loss function, without its parameters ('Quantile:alpha=0.3' -> 'Quantile')."""
    params = model.get_all_params() if model.is_fitted() else model.get_params()
    return str(params.get("loss_function", "")).partition(":")[0]


def check_supported(model: Any) -> str:
    """The loss of a CatBoost model that can be exported; ``ExportError`` naming what cannot otherwise."""
    kind = type(model).__name__
    if not model.is_fitted():
        raise ExportError(f"the {kind} is not fitted; fit it first")
    names = list(model.feature_names_ or [])
    for what, indices in (("categorical", model.get_cat_feature_indices()),
                          ("text", model.get_text_feature_indices()),
                          ("embedding", model.get_embedding_feature_indices())):
        if len(indices):
            shown = ", ".join(repr(names[i]) if i < len(names) else str(i) for i in indices)
            why = (" (CatBoost keeps only 32-bit hashes of the categories and counter statistics, which an "
                   "ONNX graph cannot recompute from the text)" if what == "categorical" else "")
            raise ExportError(f"CatBoost {what} features cannot be exported exactly: {shown}{why}; {ENCODE_IT}")
    if kind == "CatBoostRanker":
        raise ExportError("CatBoostRanker (a ranking model) cannot be exported; supported: CatBoostRegressor "
                          "and CatBoostClassifier")
    grow = model.get_all_params().get("grow_policy", "SymmetricTree")
    if grow != "SymmetricTree":
        raise ExportError(f"CatBoost grow_policy {grow!r} cannot be exported; only 'SymmetricTree' (the default, "
                          "oblivious trees)")
    loss = loss_name(model)
    if loss not in SUPPORTED:
        raise ExportError(f"CatBoost loss_function {loss!r} cannot be exported; supported: {', '.join(SUPPORTED)}")
    return loss


def as_estimator(model: Any) -> Any:
    """``model`` as CatBoost's scikit-learn class for its loss: a plain ``CatBoost`` (as .cbm files load) becomes
    a ``CatBoostRegressor`` or ``CatBoostClassifier`` (its classes, its ``predict``)."""
    import catboost

    if isinstance(model, catboost.CatBoostRegressor | catboost.CatBoostClassifier):
        return model
    loss = check_supported(model)
    cls = catboost.CatBoostClassifier if loss in CLASSIFIERS else catboost.CatBoostRegressor
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.cbm"
        model.save_model(str(path))
        out = cls()
        out.load_model(str(path))
    return out


def classes(model: Any) -> list[Any]:
    """A classifier's class labels, in the order of its probabilities."""
    found = getattr(as_estimator(model), "classes_", None)
    if found is None:
        raise ExportError("the CatBoost classifier does not name its classes")
    return [c.item() if isinstance(c, np.generic) else c for c in found]


def parse(model: Any) -> Parsed:
    loss = check_supported(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        model.save_model(str(path), format="json")
        dump = json.loads(path.read_text())
    if "oblivious_trees" not in dump:
        raise ExportError("the CatBoost model has non-symmetric trees; only oblivious trees can be exported")
    floats = dump["features_info"].get("float_features", [])
    missing_left = {int(f["feature_index"]): f.get("nan_value_treatment") != "AsTrue" for f in floats}
    scale, bias = dump.get("scale_and_bias", [1.0, [0.0]])
    bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    dimensions = len(bias)
    trees: list[Tree] = []
    found: dict[int, set[float]] = {}
    for t in dump["oblivious_trees"]:
        splits = t.get("splits") or []
        if len(splits) > MAX_DEPTH:
            raise ExportError(f"a CatBoost tree of depth {len(splits)} cannot be exported (it would take "
                              f"2**{len(splits)} leaves); the limit is depth {MAX_DEPTH}")
        for s in splits:
            if s.get("split_type", "FloatFeature") != "FloatFeature":
                raise ExportError(f"CatBoost split type {s.get('split_type')!r} cannot be exported; {ENCODE_IT}")
        features = np.array([int(s["float_feature_index"]) for s in splits], dtype=np.int64)
        borders = np.array([float(np.float32(s["border"])) for s in splits])
        nan_left = np.array([missing_left.get(int(f), True) for f in features], dtype=bool)
        values = np.asarray(t["leaf_values"], dtype=np.float64).reshape(-1, dimensions)
        for f, b in zip(features, borders, strict=True):
            found.setdefault(int(f), set()).add(float(b))
        trees += [_oblivious(features, borders, nan_left, values[:, k]) for k in range(dimensions)]
    return Parsed(trees, dimensions, float(scale), bias, loss, len(floats),
                  {f: np.array(sorted(ts)) for f, ts in sorted(found.items())})


@cache
def _layout(depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A full binary tree testing split ``depth - 1`` at the root and split 0 last: per node its level (-1 at a
    leaf), its left and right children (-1 at a leaf) and, at a leaf, the oblivious leaf index it is."""
    level, left, right, leaf = [], [], [], []

    def node(at: int, prefix: int) -> int:
        i = len(level)
        level.append(at), left.append(-1), right.append(-1), leaf.append(prefix)
        if at >= 0:  # not above the border (bit clear) goes left, as Tree's x <= threshold
            left[i] = node(at - 1, prefix)
            right[i] = node(at - 1, prefix | (1 << at))
        return i

    node(depth - 1, 0)
    return np.array(level), np.array(left), np.array(right), np.array(leaf)


def _oblivious(features: np.ndarray, borders: np.ndarray, nan_left: np.ndarray, values: np.ndarray) -> Tree:
    if not len(features):
        return constant_tree(float(values[0]))
    level, left, right, leaf = _layout(len(features))
    split = level >= 0
    at = np.where(split, level, 0)
    return Tree(np.where(split, features[at], 0), np.where(split, borders[at], 0.0), left, right,
                np.where(split, nan_left[at], False), np.where(split, 0.0, values[leaf]))


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return parse(model).thresholds


@register("catboost.core.CatBoostRegressor", "catboost.core.CatBoostClassifier", "catboost.core.CatBoost",
          "catboost.core.CatBoostRanker", thresholds=_thresholds)
def convert_catboost(graph: Graph, model: Any, x: Tensor | Table) -> Prediction | ClassScores:
    parsed = parse(model)
    x = x if isinstance(x, Tensor) else single_tensor(x, "the CatBoost model")  # a Table through native.py
    if x.width != parsed.width:
        raise ExportError(f"the CatBoost model was trained on {parsed.width} features but gets {x.width}")
    c = graph.const
    k, loss = parsed.dimensions, parsed.loss
    if loss in BINARY:
        pair = tree_sums(graph, x, x.width, parsed.trees, leaf_scale=-1.0, zero_columns=1,
                         float32_input=True)  # [-sum, 0]
        if parsed.scale != 1.0:  # -(scale * sum) - bias is -(scale * sum + bias) bit for bit
            pair = graph.op("Mul", [pair, c(np.array([parsed.scale, 1.0]), "scale")])  # type: ignore[assignment]
        pair = graph.op("Add", [pair, c(np.array([-parsed.bias[0], 0.0]), "bias")])  # type: ignore[assignment]
        # [0 * -raw, raw]: argmax 1 exactly where raw > 0, CatBoost's label
        decision = graph.op("MatMul", [pair, c(np.array([[0.0, -1.0], [0.0, 0.0]]), "decision")])
        return ClassScores(binary_from_negated(graph, pair), classes(model), decision=decision)  # type: ignore[arg-type]
    raw = tree_sums(graph, x, x.width, parsed.trees, k, float32_input=True)
    if parsed.scale != 1.0:
        raw = graph.op("Mul", [raw, c(np.array(parsed.scale), "scale")])  # type: ignore[assignment]
    raw = graph.op("Add", [raw, c(parsed.bias, "bias")])  # type: ignore[assignment]
    if loss in MULTICLASS:
        return ClassScores(softmax(graph, raw), classes(model), decision=raw)
    if k != 1:
        raise ExportError(f"the CatBoost {loss} model has {k} outputs; only one can be exported")
    if loss in EXPONENT:
        raw = graph.op("Exp", [raw])  # type: ignore[assignment]
    return Prediction(raw)


__all__ = ["CLASSIFIERS", "ENCODE_IT", "SUPPORTED", "as_estimator", "check_supported", "classes", "convert_catboost", "loss_name",
           "parse"]
