"""PolynomialFeatures, with scikit-learn's own products: bit for bit.

scikit-learn builds each degree-``d`` column as one product of a degree ``d - 1`` column and one input
column (``XP[:, start:end] * X[:, i]``, then the next ``i``), so ``x0 * x1 * x2`` is ``(x0 * x1) * x2``.
The graph multiplies the same pairs in the same order (one rounding each, as numpy), then drops the
columns below ``min_degree`` as it does; the bias column is 1.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from sklearn.preprocessing import PolynomialFeatures

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register


def _ones(graph: Graph, x: str) -> str:
    """``[N, 1]`` of 1.0 (``0 * x + 1`` would turn NaN rows into NaN)."""
    rows = graph.op("Slice", [graph.op("Shape", [x]), graph.const(np.array([0], dtype=np.int64), "start"),
                              graph.const(np.array([1], dtype=np.int64), "stop")])
    shape = graph.op("Concat", [rows, graph.const(np.array([1], dtype=np.int64), "width")], axis=0)
    one = helper.make_tensor("one", TensorProto.DOUBLE, [1], [1.0])
    return graph.op("ConstantOfShape", [shape], value=one)  # type: ignore[return-value]


def _columns(graph: Graph, x: str, indices: list[int] | range) -> str:
    return graph.op("Gather", [x, graph.const(np.asarray(indices, dtype=np.int64), "columns")],  # type: ignore
                    axis=1)


@register(PolynomialFeatures)
def convert_polynomial_features(graph: Graph, poly: PolynomialFeatures, x: Tensor) -> Tensor:
    x = numeric(x, poly)
    n, max_degree = x.width, poly._max_degree
    if getattr(poly, "n_features_in_", n) != n:
        raise ExportError(f"PolynomialFeatures was fitted on {poly.n_features_in_} columns but gets {n}")
    if max_degree == 0:
        if not poly.include_bias:
            raise ExportError("PolynomialFeatures(degree=0, include_bias=False) outputs no column")
        return Tensor(_ones(graph, x.name), 1, nan=(False,))
    # XP without the bias column: degree 1 is X itself; ``index`` as scikit-learn's, less the bias offset
    blocks = [x.name]
    xp, current = x.name, n
    index = [*range(n), n]
    for _ in range(2, max_degree + 1):
        new_index, end, grown = [], index[-1], []
        for i in range(n):
            start = index[i]
            new_index.append(current)
            if poly.interaction_only:
                start += index[i + 1] - index[i]
            stop = current + end - start
            if stop <= current:
                break
            grown.append(graph.op("Mul", [_columns(graph, xp, range(start, end)), _columns(graph, x.name, [i])]))
            current = stop
        new_index.append(current)
        index = new_index
        blocks += grown
        xp = graph.op("Concat", blocks, axis=1) if len(blocks) > 1 else blocks[0]  # type: ignore[assignment]
    width = poly.n_output_features_ - int(poly.include_bias)
    if current - width:  # min_degree > 1: scikit-learn keeps the last columns
        xp = _columns(graph, xp, range(current - width, current))
    if poly.include_bias:
        xp = graph.op("Concat", [_ones(graph, x.name), xp], axis=1)  # type: ignore[assignment]
    if xp == x.name:
        return x
    return Tensor(xp, poly.n_output_features_, nan=None)
