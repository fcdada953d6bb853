"""Kernel SVMs (SVC, NuSVC, SVR, NuSVR) as libsvm predicts, in double.

- The kernel between a row and each support vector: ``linear`` ``x . sv``, ``poly``
  ``powi(gamma * x . sv + coef0, degree)`` (libsvm's repeated squaring, step for step), ``rbf``
  ``exp(-gamma * |x - sv|^2)`` (libsvm subtracts first; the graph expands ``|x|^2 + |sv|^2 - 2 x . sv``,
  one ``MatMul``: an absolute error of a few ulps of ``|x|^2 + |sv|^2`` in the exponent, below 1e-13
  relative in the kernel), ``sigmoid`` ``tanh(gamma * x . sv + coef0)``. libsvm adds ``x . sv`` with BLAS
  ``ddot`` and onnxruntime with its own kernel: a few ulps of the sum apart, and onnxruntime's
  ``Exp``/``Tanh`` are within an ulp of glibc's.
- Regressors: ``K @ dual_coef_.T + intercept_``.
- Classifiers: libsvm's one-vs-one values ``dec[i, j]`` per class pair, one vote each (``dec > 0`` votes
  for ``i``), the label the first class with the most votes (``break_ties``: ``argmax`` of scikit-learn's
  ``_ovr_decision_function``, reproduced in its order of additions). A ``decision`` output carries
  ``decision_function`` (``ovr``) for a model without probabilities.
- ``probability=True``: Platt's ``sigmoid_predict`` per pair, clipped to ``[1e-7, 1 - 1e-7]``, then libsvm's
  ``multiclass_probability`` (Wu, Lin and Weng's method 2), binary too: an iterative solver with a
  convergence test over every row at once, a row frozen once its own test passes, each operation in
  libsvm's order. The first ``_UNROLLED`` iterations are plain nodes and the rest an ONNX ``Loop`` that
  starts only when a row has not converged by then (15 of iris's 150 rows, 956 of digits' 1797): one row
  of 3 classes went from 114 to 78 us in process (a Loop iteration costs about 30 us in onnxruntime,
  three times its nodes). Only the rounding of ``exp`` and of the kernel sums differs; a row whose
  error lands within that rounding of the stopping threshold could stop one iteration apart (not seen in
  the tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper
from sklearn.svm import SVC, SVR, NuSVC, NuSVR

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import ClassScores, Prediction, register
from tabserve.training.convert.trees import sequential_sum

_AXIS_1 = np.array([1], dtype=np.int64)
_MIN_PROB = 1e-7


def kernel(graph: Graph, model: Any, x: Tensor) -> str:
    """``[N, S]``: the kernel between each row and each support vector."""
    if callable(model.kernel) or model.kernel == "precomputed":
        raise ExportError(f"{type(model).__name__}(kernel={model.kernel!r}) has no exact converter: the "
                          "graph computes only linear, poly, rbf and sigmoid kernels; fit with one of them")
    c = graph.const
    sv = np.asarray(model.support_vectors_, np.float64)
    gamma = float(model._gamma)
    dot = graph.op("MatMul", [x.name, c(sv.T.copy(), "support_vectors")])
    if model.kernel == "rbf":
        # |x - sv|^2 as |x|^2 + |sv|^2 - 2 x.sv: one MatMul instead of an [N, S, F] tensor (4x faster for
        # 400 rows). Its absolute error, a few ulps of |x|^2 + |sv|^2, moves exp(-gamma d^2) by gamma times
        # that, relative: measured 3e-14 on the tests' far rows
        x_norms = graph.op("ReduceSum", [graph.op("Mul", [x.name, x.name]), c(_AXIS_1, "axis")], keepdims=1)
        norms = c(np.einsum("ij,ij->i", sv, sv), "support_norms")
        squares = graph.op("Sub", [graph.op("Add", [x_norms, norms]), graph.op("Add", [dot, dot])])
        squares = graph.op("Max", [squares, c(np.array(0.0), "zero")])
        scaled = graph.op("Mul", [squares, c(np.array(-gamma), "minus_gamma")])
        return graph.op("Exp", [scaled])  # type: ignore[return-value]
    if model.kernel == "linear":
        return dot  # type: ignore[return-value]
    base = graph.op("Add", [graph.op("Mul", [dot, c(np.array(gamma), "gamma")]),
                            c(np.array(float(model.coef0)), "coef0")])
    if model.kernel == "sigmoid":
        return graph.op("Tanh", [base])  # type: ignore[return-value]
    return _powi(graph, base, int(model.degree))  # type: ignore[arg-type]


def _powi(graph: Graph, base: str, times: int) -> str:
    """libsvm's ``powi``: ``ret *= tmp`` for each set bit of ``times``, ``tmp = tmp * tmp`` between."""
    tmp, ret = base, None
    while times > 0:
        if times % 2 == 1:
            ret = tmp if ret is None else graph.op("Mul", [ret, tmp])  # 1.0 * tmp is tmp
        times //= 2
        if times > 0:
            tmp = graph.op("Mul", [tmp, tmp])  # type: ignore[assignment]
    if ret is None:  # degree 0
        return graph.op("Add", [graph.op("Mul", [base, graph.const(np.array(0.0), "zero")]),
                                graph.const(np.array(1.0), "one")])  # type: ignore[return-value]
    return ret  # type: ignore[return-value]


@register(SVR, NuSVR)
def convert_svr(graph: Graph, model: Any, x: Tensor) -> Prediction:
    k = kernel(graph, model, numeric(x, model))
    coef = np.asarray(model._dual_coef_, np.float64).reshape(1, -1).T.copy()
    out = graph.op("Add", [graph.op("MatMul", [k, graph.const(coef, "dual_coef")]),
                           graph.const(np.asarray(model._intercept_, np.float64), "intercept")])
    return Prediction(out)  # type: ignore[arg-type]


def pairs(n_classes: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]


def one_vs_one(graph: Graph, model: Any, k: str) -> str:
    """``[N, P]``: libsvm's ``dec_values``, one per class pair ``(i, j)``, ``i < j``, in libsvm's order."""
    n_support = np.asarray(model._n_support)
    start = np.concatenate([[0], np.cumsum(n_support)[:-1]])
    dual = np.asarray(model._dual_coef_, np.float64)
    classes = len(n_support)
    coef = np.zeros((dual.shape[1], len(pairs(classes))))
    for p, (i, j) in enumerate(pairs(classes)):
        si, sj = start[i], start[j]
        coef[si:si + n_support[i], p] = dual[j - 1, si:si + n_support[i]]
        coef[sj:sj + n_support[j], p] = dual[i, sj:sj + n_support[j]]
    product = graph.op("MatMul", [k, graph.const(coef, "dual_coef")])
    rho = graph.const(np.asarray(model._intercept_, np.float64), "rho")
    return graph.op("Add", [product, rho])  # type: ignore[return-value]


def votes(graph: Graph, dec: str, n_classes: int, at_zero: str = "Greater") -> str:
    """``[N, K]`` libsvm's votes: pair ``(i, j)`` votes ``i`` where ``dec > 0``, else ``j`` (``at_zero``
    "GreaterOrEqual": ``i`` where ``dec >= 0``, as ``_ovr_decision_function`` counts)."""
    to_i = np.zeros((len(pairs(n_classes)), n_classes))
    to_j = np.zeros_like(to_i)
    for p, (i, j) in enumerate(pairs(n_classes)):
        to_i[p, i], to_j[p, j] = 1.0, 1.0
    won = graph.cast(graph.op(at_zero, [dec, graph.const(np.array(0.0), "zero")]), TensorProto.DOUBLE)
    # sum(won * to_i + (1 - won) * to_j) = won @ (to_i - to_j) + sum(to_j): small integers, exact
    return graph.op("Add", [graph.op("MatMul", [won, graph.const(to_i - to_j, "votes")]),
                            graph.const(to_j.sum(axis=0), "votes_lost")])  # type: ignore[return-value]


def ovr_decision(graph: Graph, dec: str, n_classes: int) -> str:
    """scikit-learn's ``_ovr_decision_function(dec < 0, -dec, K)``: votes plus the summed confidences
    ``s / (3 * (|s| + 1))``, each class's sum added up in pair order as its loop does."""
    c = graph.const
    columns = graph.op("Split", [dec], axis=1, outputs=len(pairs(n_classes)), base="pair",
                       num_outputs=len(pairs(n_classes)))
    columns = [columns] if isinstance(columns, str) else columns
    sums: list[str] = [c(np.zeros((1, 1)), "zero")] * n_classes
    for p, (i, j) in enumerate(pairs(n_classes)):
        confidence = columns[p]  # -dec negated back: sum -= -dec is sum + dec
        sums[i] = graph.op("Add", [sums[i], confidence])  # type: ignore[assignment]
        sums[j] = graph.op("Sub", [sums[j], confidence])  # type: ignore[assignment]
    total = graph.op("Concat", sums, axis=1)
    scaled = graph.op("Mul", [c(np.array(3.0), "three"),
                              graph.op("Add", [graph.op("Abs", [total]), c(np.array(1.0), "one")])])
    counted = votes(graph, dec, n_classes, "GreaterOrEqual")  # predictions = dec < 0 vote for j
    return graph.op("Add", [counted, graph.op("Div", [total, scaled])])  # type: ignore


def pairwise_probabilities(graph: Graph, model: Any, dec: str) -> str:
    """``[N, P]`` libsvm's ``sigmoid_predict(dec, A, B)``, clipped to ``[1e-7, 1 - 1e-7]``."""
    c = graph.const
    f = graph.op("Add", [graph.op("Mul", [dec, c(np.asarray(model._probA, np.float64), "prob_a")]),
                         c(np.asarray(model._probB, np.float64), "prob_b")])
    one = c(np.array(1.0), "one")
    e_neg = graph.op("Exp", [graph.op("Neg", [f])])
    upper = graph.op("Div", [e_neg, graph.op("Add", [one, e_neg])])  # f >= 0
    lower = graph.op("Div", [one, graph.op("Add", [one, graph.op("Exp", [f])])])
    p = graph.op("Where", [graph.op("GreaterOrEqual", [f, c(np.array(0.0), "zero")]), upper, lower])
    p = graph.op("Max", [p, c(np.array(_MIN_PROB), "min_prob")])
    return graph.op("Min", [p, c(np.array(1 - _MIN_PROB), "max_prob")])  # type: ignore[return-value]


def couple(graph: Graph, r_pairs: str, n_classes: int) -> str:
    """``[N, K]``: libsvm's ``multiclass_probability`` of the pairwise probabilities ``[N, P]``."""
    c, k = graph.const, n_classes
    # r[i][j] = r_p, r[j][i] = 1 - r_p: one Gather from [r, 1 - r]; r[i][i] = 0 (times 0, r is finite)
    complement = graph.op("Sub", [c(np.array(1.0), "one"), r_pairs])
    n_pairs = len(pairs(k))
    index = np.zeros((k, k), dtype=np.int64)
    for p, (i, j) in enumerate(pairs(k)):
        index[i, j], index[j, i] = p, n_pairs + p
    source = graph.op("Concat", [r_pairs, complement], axis=1)
    r = graph.op("Gather", [source, c(index.reshape(-1), "pair_index")], axis=1)
    r = graph.op("Mul", [graph.op("Reshape", [r, c(np.array([-1, k, k], np.int64), "square")]),
                         c(1.0 - np.eye(k), "off_diagonal")])
    rt = graph.op("Transpose", [r], perm=[0, 2, 1])  # rt[t][j] = r[j][t]
    diagonal = sequential_sum(graph, graph.op("Mul", [rt, rt]), axis=2)  # Q[t][t] += r[j][t]^2, j in order
    off = graph.op("Neg", [graph.op("Mul", [rt, r])])  # Q[t][j] = -r[j][t] * r[t][j]
    eye = c(np.eye(k, dtype=bool), "eye")
    q = graph.op("Where", [eye, graph.op("Unsqueeze", [diagonal, c(np.array([2], np.int64), "axis")]), off])
    p0 = graph.op("Expand", [c(np.full((1, k), 1.0 / k), "uniform"),
                             graph.op("Shape", [diagonal])])
    # What every sweep reads of Q, taken once outside the iterations (the Loop body reads it too): per class
    # t, Q[t][t] and [e_t, Q[t][:]], the row that updates [p, Qp] in one step (``_iteration``).
    shape = graph.op("Shape", [diagonal])
    q_cols = []
    for t in range(k):
        q_t = graph.op("Squeeze", [graph.op("Gather", [q, c(np.array([t], np.int64), "t")], axis=1),
                                   c(_AXIS_1, "axis1")])
        e_t = graph.op("Expand", [c(np.eye(k)[t:t + 1], "unit"), shape])
        q_cols.append((graph.op("Gather", [diagonal, c(np.array([t], np.int64), "t")], axis=1),
                       graph.op("Concat", [e_t, q_t], axis=1)))
    # The first iterations unrolled (see the module's docstring): most rows stop after 2 updates.
    p = p0
    for _ in range(_UNROLLED):
        p, _ = _iteration(graph, p, q, q_cols, k)
    # Rows still not converged (rare) go on in a Loop, at most max_iter iterations in all. Its first trip
    # runs only when one of them exists: the check is the first step of the next iteration.
    any_active = _any(graph, _converging(graph, p, q, k)[2])
    trips = c(np.array(max(100, k) - _UNROLLED, np.int64), "max_iter")
    outer = {q, *(n for pair in q_cols for n in pair)}
    return graph.op("Loop", [trips, any_active, p], base="coupled",  # type: ignore[return-value]
                    body=_loop_body(graph, k, q, q_cols, outer))


_UNROLLED = 2


def _converging(g: Graph, p: str, q: str, k: int) -> tuple[str, str, str]:
    """libsvm's first step of an iteration: ``Qp``, ``pQp`` and whether the row goes on (its error is not
    below ``eps = 0.005 / k``; libsvm breaks out of the loop there)."""
    c = g.const
    qp = sequential_sum(g, g.op("Mul", [q, g.op("Unsqueeze", [p, c(_AXIS_1, "axis1")])]), axis=2)
    pqp = sequential_sum(g, g.op("Mul", [p, qp]), axis=1, keepdims=True)
    error = g.op("ReduceMax", [g.op("Abs", [g.op("Sub", [qp, pqp])]), c(_AXIS_1, "axis1")], keepdims=1)
    active = g.op("Not", [g.op("Less", [error, c(np.array(0.005 / k), "eps")])])
    return qp, pqp, active  # type: ignore[return-value]


def _any(g: Graph, active: str) -> str:
    flat = g.op("Reshape", [g.cast(active, TensorProto.INT64), g.const(np.array([-1], np.int64), "flat")])
    padded = g.op("Concat", [flat, g.const(np.array([0], np.int64), "none")], axis=0)  # an empty batch stops
    return g.op("Greater", [g.op("ReduceMax", [padded], keepdims=0), g.const(np.array(0, np.int64), "zero")])  # type: ignore


def _iteration(g: Graph, p: str, q: str, q_cols: list[tuple[str, str]], k: int) -> tuple[str, str]:
    """One iteration of ``multiclass_probability`` for every row, in libsvm's order of operations; rows that
    have converged keep their ``p``. Returns the new ``p`` and which rows were still converging.

    libsvm's ``p[t] += diff; Qp[j] = (Qp[j] + diff * Q[t][j]) / (1 + diff); p[j] /= (1 + diff)`` is one
    step on ``[p, Qp]``: ``([p, Qp] + diff * [e_t, Q[t]]) / (1 + diff)``, the same operations on every value
    (``p[j] + diff * 0`` is ``p[j]``), in 3 nodes instead of 6."""
    c = g.const
    qp, new_pqp, active = _converging(g, p, q, k)
    both = g.op("Concat", [p, qp], axis=1)
    one, two = c(np.array(1.0), "one"), c(np.array(2.0), "two")
    for t, (q_tt, e_q_t) in enumerate(q_cols):
        qp_t = g.op("Gather", [both, c(np.array([k + t], np.int64), "t")], axis=1)
        diff = g.op("Div", [g.op("Sub", [new_pqp, qp_t]), q_tt])
        grow = g.op("Add", [one, diff])
        inner = g.op("Add", [g.op("Mul", [diff, q_tt]), g.op("Mul", [two, qp_t])])
        new_pqp = g.op("Div", [g.op("Div", [g.op("Add", [new_pqp, g.op("Mul", [diff, inner])]), grow]), grow])
        both = g.op("Div", [g.op("Add", [both, g.op("Mul", [diff, e_q_t])]), grow])
    new_p = g.op("Slice", [both, c(np.array([0], np.int64), "start"), c(np.array([k], np.int64), "end"),
                           c(_AXIS_1, "axis1")])
    return g.op("Where", [active, new_p, p]), active  # type: ignore[return-value]


def _loop_body(graph: Graph, k: int, q: str, q_cols: list[tuple[str, str]], outer: set[str]) -> Any:
    """The Loop's body: one ``_iteration``; it goes on while a row is converging. Q and its columns are
    read from the outer graph, whose names the body's own never repeat."""
    g = Graph(_used=dict(graph._used))
    p = "body_p"
    new_p, active = _iteration(g, p, q, q_cols, k)
    g.rename(new_p, "body_p_out")
    g.rename(_any(g, active), "body_cond")
    double = TensorProto.DOUBLE
    inputs = [helper.make_tensor_value_info("body_iter", TensorProto.INT64, []),
              helper.make_tensor_value_info("body_cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info(p, double, [None, k])]
    outputs = [helper.make_tensor_value_info("body_cond", TensorProto.BOOL, []),
               helper.make_tensor_value_info("body_p_out", double, [None, k])]
    for node in g.nodes:  # names unique across the outer graph and the body; Q comes from the outer graph
        node.name = f"body_{node.name}"
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if not name.startswith("body_") and name not in outer:
                    names[i] = f"body_{name}"
    for init in g.initializers:
        init.name = f"body_{init.name}" if not init.name.startswith("body_") else init.name
    return helper.make_graph(g.nodes, "multiclass_probability", inputs, outputs, g.initializers)


@register(SVC, NuSVC)
def convert_svc(graph: Graph, model: Any, x: Tensor) -> ClassScores:
    classes = list(model.classes_)
    n = len(classes)
    dec = one_vs_one(graph, model, kernel(graph, model, numeric(x, model)))
    ovr = ovr_decision(graph, dec, n) if n > 2 else None
    label = ovr if model.break_ties and model.decision_function_shape == "ovr" and ovr is not None \
        else votes(graph, dec, n)
    if getattr(model, "probability", False) is True and np.size(model._probA):
        probabilities = couple(graph, pairwise_probabilities(graph, model, dec), n)
        return ClassScores(probabilities, classes, decision=label)
    if n == 2:
        scores = graph.op("Neg", [dec])  # decision_function flips libsvm's sign for two classes
    else:
        scores = ovr if model.decision_function_shape == "ovr" else None  # type: ignore[assignment]
    return ClassScores(None, classes, decision=label, scores=scores)  # type: ignore[arg-type]
