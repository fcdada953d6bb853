"""Discriminant analysis in double.

- LinearDiscriminantAnalysis is a linear classifier: ``d = X @ coef_.T + intercept_``; binary
  ``p = expit(d)``, ``[1 - p, p]``, label ``d > 0``; multiclass ``softmax(d)``, label ``argmax(d)``
  (as ``linear``'s LogisticRegression).
- QuadraticDiscriminantAnalysis: per class ``k``, ``norm2 = sum(((X - means_[k]) @ W_k) ** 2)`` with
  ``W_k = rotations_[k] * scalings_[k] ** -0.5`` (computed with numpy, as scikit-learn does), scores
  ``-0.5 * (norm2 + u_k) + log(priors_[k])``; label ``argmax``; probabilities as
  ``DiscriminantAnalysisPredictionMixin`` computes them (``log_softmax``), not onnxruntime's ``Softmax``.
"""

from __future__ import annotations

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis

from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import decision
from tabserve.training.convert.links import binary_probabilities, expit, sign_decision, softmax
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, register

_AXIS_1 = np.array([1], dtype=np.int64)


def exp_log_softmax(graph: Graph, scores: str) -> str:
    """``exp(ll - log(sum(exp(ll))))`` with ``ll = scores - max(scores)``, per row (``[N, K]``): the
    mixin's ``predict_proba`` op for op (QDA, NearestCentroid)."""
    axis = graph.const(_AXIS_1, "axis")
    ll = graph.op("Sub", [scores, graph.op("ReduceMax", [scores, axis], keepdims=1)])
    total = graph.op("ReduceSum", [graph.op("Exp", [ll]), axis], keepdims=1)
    return graph.op("Exp", [graph.op("Sub", [ll, graph.op("Log", [total])])])  # type: ignore[return-value]


@register(LinearDiscriminantAnalysis)
def convert_lda(graph: Graph, model: LinearDiscriminantAnalysis, x: Tensor) -> ClassScores:
    d = decision(graph, numeric(x, model), model.coef_, model.intercept_)
    classes = list(model.classes_)
    if len(classes) == 2:
        probabilities = binary_probabilities(graph, expit(graph, d))
        return ClassScores(probabilities, classes, decision=sign_decision(graph, d))
    return ClassScores(softmax(graph, d), classes, decision=d)


@register(QuadraticDiscriminantAnalysis)
def convert_qda(graph: Graph, model: QuadraticDiscriminantAnalysis, x: Tensor) -> ClassScores:
    x = numeric(x, model)
    c = graph.const
    means = np.asarray(model.means_, np.float64)
    # [K, F, r]: each class's whitening; a class with fewer rows than features has fewer directions, padded
    # with zero columns (each adds an exact 0 to its sum)
    per_class = [np.asarray(r) * (np.asarray(s) ** (-0.5)) for r, s in
                 zip(model.rotations_, model.scalings_, strict=True)]
    whiten = np.zeros((len(per_class), x.width, max(w.shape[1] for w in per_class)))
    for k, w in enumerate(per_class):
        whiten[k, :, :w.shape[1]] = w
    centred = graph.op("Sub", [x.name, c(means[:, None, :], "means")])  # [K, N, F]
    projected = graph.op("MatMul", [centred, c(whiten, "whiten")])  # [K, N, r]
    squares = graph.op("Mul", [projected, projected])
    norm2 = graph.op("ReduceSum", [squares, c(np.array([2], dtype=np.int64), "axis")], keepdims=0)
    u = np.asarray([np.sum(np.log(s)) for s in model.scalings_])
    shifted = graph.op("Add", [graph.op("Transpose", [norm2], perm=[1, 0]), c(u, "log_det")])
    scores = graph.op("Add", [graph.op("Mul", [shifted, c(np.array(-0.5), "minus_half")]),
                              c(np.log(np.asarray(model.priors_, np.float64)), "log_prior")])
    probabilities = exp_log_softmax(graph, scores)  # type: ignore[arg-type]
    return ClassScores(probabilities, list(model.classes_), decision=scores)  # type: ignore[arg-type]
