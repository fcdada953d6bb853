"""Naive Bayes classifiers in double: the joint log likelihood, then scikit-learn's normalisation.

``predict`` is ``classes_[argmax(jll)]`` and ``predict_proba`` is ``exp(jll - logsumexp(jll))``, with
scikit-learn's own ``logsumexp`` (``utils._array_api._logsumexp``, after scipy's): the row maximum ``M``
taken out, ``s`` the sum of ``exp(jll - M)`` over the other entries divided by the count ``m`` of maxima,
``log1p(s) + log(m) + M``. ONNX has no ``Log1p``: ``log(u) * s / (u - 1)`` with ``u = 1 + s`` (``s`` where
``u`` rounds to 1) is within a few ulps of it (Goldberg's formula), and the result is then rounded into
``M`` as scikit-learn does.

The joint log likelihoods, as scikit-learn computes them:
- GaussianNB: ``log(prior) + (c - 0.5 * sum((x - theta) ** 2 / var))``, ``c = -0.5 * sum(log(2 pi var))``;
- MultinomialNB: ``X @ feature_log_prob_.T + class_log_prior_``; ComplementNB the same without the prior
  (unless there is one class);
- BernoulliNB: ``X`` binarized (``x > binarize`` is 1), ``X @ (flp - neg).T + (class_log_prior_ +
  sum(neg))``, ``neg = log(1 - exp(flp))``.
Sums over features are added in another order than numpy's pairwise sum: a few ulps of the sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB

from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import decision
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, register

_AXIS_1 = np.array([1], dtype=np.int64)


def log1p(graph: Graph, s: str) -> str:
    """``log(1 + s)`` for ``s >= 0`` within a few ulps (ONNX has no ``Log1p``)."""
    c = graph.const
    u = graph.op("Add", [s, c(np.array(1.0), "one")])
    ratio = graph.op("Div", [s, graph.op("Sub", [u, c(np.array(1.0), "one")])])
    accurate = graph.op("Mul", [graph.op("Log", [u]), ratio])
    exact_one = graph.op("Equal", [u, c(np.array(1.0), "one")])
    return graph.op("Where", [exact_one, s, accurate])  # type: ignore[return-value]


def normalized(graph: Graph, jll: str, classes: list[Any]) -> ClassScores:
    """``exp(jll - logsumexp(jll))``, label ``argmax(jll)``, as ``_BaseNB`` (``jll``: ``[N, K]``)."""
    c = graph.const
    axis = c(_AXIS_1, "axis")
    top = graph.op("ReduceMax", [jll, axis], keepdims=1)
    is_top = graph.op("Equal", [jll, top])
    others = graph.op("Where", [is_top, c(np.array(-np.inf), "minus_inf"), jll])
    m = graph.op("ReduceSum", [graph.cast(is_top, TensorProto.DOUBLE), axis], keepdims=1)
    # a row whose maximum is -inf is shifted by 0, as scikit-learn does
    shift = graph.op("Where", [graph.op("IsInf", [top]), c(np.array(0.0), "zero"), top])
    s = graph.op("ReduceSum", [graph.op("Exp", [graph.op("Sub", [others, shift])]), axis], keepdims=1)
    s = graph.op("Div", [s, m])  # scikit-learn divides where s != 0; 0 / m is 0 too
    total = graph.op("Add", [graph.op("Add", [log1p(graph, s), graph.op("Log", [m])]), top])
    probabilities = graph.op("Exp", [graph.op("Sub", [jll, total])])
    return ClassScores(probabilities, classes, decision=jll)  # type: ignore[arg-type]


@register(GaussianNB)
def convert_gaussian_nb(graph: Graph, model: GaussianNB, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    c = graph.const
    theta, var = np.asarray(model.theta_, np.float64), np.asarray(model.var_, np.float64)
    rows = graph.op("Unsqueeze", [x.name, c(_AXIS_1, "axis")])  # [N, 1, F] against [K, F]
    centred = graph.op("Sub", [rows, c(theta, "theta")])
    scaled = graph.op("Div", [graph.op("Mul", [centred, centred]), c(var, "var")])
    squares = graph.op("ReduceSum", [scaled, c(np.array([2], dtype=np.int64), "axis")], keepdims=0)
    constant = np.array([-0.5 * np.sum(np.log(2.0 * np.pi * var[i, :])) for i in range(len(var))])
    n = graph.op("Sub", [c(constant, "log_norm"), graph.op("Mul", [squares, c(np.array(0.5), "half")])])
    prior = np.log(np.asarray(model.class_prior_, np.float64))
    jll = graph.op("Add", [c(prior, "log_prior"), n])
    return normalized(graph, jll, list(model.classes_))  # type: ignore[arg-type]


@register(MultinomialNB)
def convert_multinomial_nb(graph: Graph, model: MultinomialNB, x: Tensor) -> ClassScores:
    jll = decision(graph, numeric(x, model), model.feature_log_prob_, model.class_log_prior_)
    return normalized(graph, jll, list(model.classes_))


@register(ComplementNB)
def convert_complement_nb(graph: Graph, model: ComplementNB, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    flp = np.asarray(model.feature_log_prob_, np.float64)
    if len(model.classes_) == 1:
        jll = decision(graph, x, flp, model.class_log_prior_)
    else:
        jll = graph.op("MatMul", [x.name, graph.const(flp.T.copy(), "coef")])  # type: ignore[assignment]
    return normalized(graph, jll, list(model.classes_))


def _binarize_thresholds(model: BernoulliNB) -> dict[int, Any]:
    """``x > binarize`` is a split on every column: the adversarial rows probe it."""
    if model.binarize is None:
        return {}
    return {column: np.array([float(model.binarize)]) for column in range(model.feature_log_prob_.shape[1])}


@register(BernoulliNB, thresholds=_binarize_thresholds)
def convert_bernoulli_nb(graph: Graph, model: BernoulliNB, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    if model.binarize is not None:
        above = graph.op("Greater", [x.name, graph.const(np.array(float(model.binarize)), "binarize")])
        x = Tensor(graph.cast(above, TensorProto.DOUBLE), x.width)  # type: ignore[arg-type]
    flp = np.asarray(model.feature_log_prob_, np.float64)
    neg = np.log(1 - np.exp(flp))
    jll = decision(graph, x, flp - neg, model.class_log_prior_ + neg.sum(axis=1))
    return normalized(graph, jll, list(model.classes_))
