"""Multi-layer perceptrons in double: scikit-learn's forward pass, layer by layer.

Each layer is ``activation @ coefs_[i] + intercepts_[i]`` (a ``MatMul`` and an ``Add``), then the hidden
activation: ``relu`` (``Relu``: ``max(x, 0)``, exact), ``identity``, ``tanh`` (onnxruntime's double
``Tanh``, within an ulp or two of numpy's), ``logistic`` (scipy's ``1 / (1 + exp(-x))``, ``links.expit``).
The output layer: identity (MLPRegressor; ``exp`` with ``loss="poisson"``), logistic (binary
MLPClassifier: ``[1 - p, p]``, label
``p > 0.5`` as ``LabelBinarizer.inverse_transform`` thresholds), softmax (multiclass: onnxruntime's
``Softmax``, label ``argmax``, the first of equal maxima as numpy's).

Where the rounding differs: each dot product adds its terms in another order than BLAS (a few ulps of the
largest term, as ``linear``), and each layer passes that on; the tests measure the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neural_network import MLPClassifier, MLPRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import decision
from tabserve.training.convert.links import binary_probabilities, expit, sign_decision, softmax
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register

_HIDDEN = ("identity", "relu", "tanh", "logistic")


def forward(graph: Graph, model: Any, x: Tensor) -> str:
    """The output layer's values before its activation, ``[N, n_outputs_]``."""
    if model.activation not in _HIDDEN:
        raise ExportError(f"{type(model).__name__}(activation={model.activation!r}) has no exact converter; "
                          f"use one of {', '.join(_HIDDEN)}")
    values, width = x.name, x.width
    last = len(model.coefs_) - 1
    for i, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        values = decision(graph, Tensor(values, width), np.asarray(coef).T, intercept)
        width = coef.shape[1]
        if i < last:
            values = _activation(graph, model.activation, values)
    return values


def _activation(graph: Graph, name: str, values: str) -> str:
    if name == "relu":
        return graph.op("Relu", [values])  # type: ignore[return-value]
    if name == "tanh":
        return graph.op("Tanh", [values])  # type: ignore[return-value]
    if name == "logistic":
        return expit(graph, values)
    return values


@register(MLPRegressor)
def convert_mlp_regressor(graph: Graph, model: MLPRegressor, x: Tensor) -> Prediction:
    if model.n_outputs_ != 1:
        raise ExportError(f"MLPRegressor predicts {model.n_outputs_} targets; tabserve serves one")
    out = forward(graph, model, numeric(x, model))
    if model.out_activation_ == "exp":  # loss="poisson"
        out = graph.op("Exp", [out])  # type: ignore[assignment]
    return Prediction(out)


@register(MLPClassifier)
def convert_mlp_classifier(graph: Graph, model: MLPClassifier, x: Tensor) -> ClassScores:
    if model._label_binarizer.y_type_ not in ("binary", "multiclass"):
        raise ExportError(f"MLPClassifier was fitted on {model._label_binarizer.y_type_} targets; "
                          "tabserve serves one label per row")
    out = forward(graph, model, numeric(x, model))
    classes = list(model.classes_)
    if model.out_activation_ == "logistic":
        p = expit(graph, out)
        # LabelBinarizer's threshold: class 1 where p > 0.5 (p - 0.5 keeps the sign of the comparison)
        over = graph.op("Sub", [p, graph.const(np.array(0.5), "half")])
        return ClassScores(binary_probabilities(graph, p), classes, decision=sign_decision(graph, over))
    return ClassScores(softmax(graph, out), classes)
