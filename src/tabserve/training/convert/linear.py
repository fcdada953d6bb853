"""Linear models in double: ``X @ coef_ + intercept_``, then scikit-learn's link function.

The dot product is the one operation whose rounding differs from scikit-learn's: numpy hands it to
BLAS and onnxruntime to its own kernel, which add the terms in another order. The difference is a few
units in the last place of the largest term (measured: <= 4e-16 * sum|x_i * w_i|), so the relative error
of a prediction stays far below 1e-9 unless its terms cancel almost exactly.

- regressors (LinearRegression, Ridge, Lasso, ElasticNet, and every ``LinearModel`` with one target:
  HuberRegressor, QuantileRegressor, BayesianRidge, ARDRegression, LinearSVR; SGDRegressor,
  PassiveAggressiveRegressor): the dot product is the prediction (GLMs: ``glm``; classifiers without
  probabilities: ``linear_classifiers``);
- LogisticRegression, binary: ``p = 1 / (1 + exp(-d))`` (scipy's ``expit``, ``links.expit``;
  onnxruntime's ``Sigmoid`` is not used: for double it is off by up to 100% where it underflows),
  probabilities ``[1 - p, p]``, label ``d > 0``;
- LogisticRegression, multiclass: sklearn's ``softmax`` (``links.softmax``), label ``argmax(d)``; the
  one-vs-rest normalisation of older scikit-learn versions as they apply it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression, SGDRegressor
from sklearn.linear_model._base import LinearModel
from sklearn.utils.fixes import parse_version

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.links import binary_probabilities, expit, sign_decision, softmax
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register

_AXIS_1 = np.array([1], dtype=np.int64)


def decision(graph: Graph, x: Tensor, coef: np.ndarray, intercept: Any) -> str:
    """``X @ coef.T + intercept``: ``[N, K]`` for ``coef`` of shape ``(K, F)``."""
    coef = np.asarray(coef, dtype=np.float64).reshape(-1, x.width)
    product = graph.op("MatMul", [x.name, graph.const(coef.T.copy(), "coef")])
    bias = np.asarray(intercept, dtype=np.float64).reshape(-1)
    return graph.op("Add", [product, graph.const(bias, "intercept")])  # type: ignore[return-value]


# PassiveAggressiveRegressor by name: deprecated in scikit-learn 1.8, gone in 1.10
@register(LinearModel, SGDRegressor, "sklearn.linear_model._passive_aggressive.PassiveAggressiveRegressor")
def convert_linear_regressor(graph: Graph, model: Any, x: Tensor) -> Prediction:
    if is_classifier(model):
        raise ExportError(f"no exact ONNX converter for the classifier {type(model).__name__}; LogisticRegression, "
                          "RidgeClassifier, LinearSVC, Perceptron and SGDClassifier are supported")
    coef = np.asarray(model.coef_)
    if coef.ndim > 1 and coef.shape[0] != 1:
        raise ExportError(f"{type(model).__name__} predicts {coef.shape[0]} targets; tabserve serves one")
    return Prediction(decision(graph, numeric(x, model), coef, model.intercept_))


@register(LogisticRegression)
def convert_logistic_regression(graph: Graph, model: LogisticRegression, x: Tensor) -> ClassScores:
    d = decision(graph, numeric(x, model), model.coef_, model.intercept_)
    classes = list(model.classes_)
    if len(classes) == 2:
        probabilities = binary_probabilities(graph, expit(graph, d))
        return ClassScores(probabilities, classes, decision=sign_decision(graph, d))  # class 1 where d > 0
    if _one_vs_rest(model):
        probabilities = normalized(graph, expit(graph, d), len(classes),
                                   uniform_where_all_zero=LR_UNIFORM_WHERE_ALL_ZERO)
        return ClassScores(probabilities, classes, decision=d)
    return ClassScores(softmax(graph, d), classes, decision=d)


# scikit-learn >= 1.9's ``_predict_proba_lr`` answers uniform probabilities where every one-vs-rest
# probability is 0 (PR #33168); before it, it divides 0 by 0 there, NaN, which the export reproduces
LR_UNIFORM_WHERE_ALL_ZERO = parse_version(sklearn.__version__) >= parse_version("1.9")


def normalized(graph: Graph, p: str, k: int, *, uniform_where_all_zero: bool = True) -> str:
    """``[N, K]`` one-vs-rest probabilities divided by their row sum (sklearn's ``_predict_proba_lr``),
    uniform where every class is 0 (NaN, 0 / 0, with ``uniform_where_all_zero=False``: the
    ``_predict_proba_lr`` of scikit-learn < 1.9)."""
    total = graph.op("ReduceSum", [p, graph.const(_AXIS_1, "axis")], keepdims=1)
    if not uniform_where_all_zero:
        return graph.op("Div", [p, total])  # type: ignore[return-value]
    zero = graph.op("Equal", [total, graph.const(np.float64(0.0), "zero")])
    p = graph.op("Where", [zero, graph.const(np.float64(1.0), "one"), p])  # type: ignore[assignment]
    total = graph.op("Where", [zero, graph.const(np.float64(k), "k"), total])
    return graph.op("Div", [p, total])  # type: ignore[return-value]


def _one_vs_rest(model: LogisticRegression) -> bool:
    """scikit-learn < 1.8 could fit a multiclass model one-vs-rest (``multi_class``, liblinear)."""
    multi_class = getattr(model, "multi_class", None)
    return multi_class in ("ovr", "warn") or (multi_class in ("auto", "deprecated")
                                               and model.solver == "liblinear")
