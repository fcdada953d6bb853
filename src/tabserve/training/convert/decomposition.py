"""PCA, IncrementalPCA and TruncatedSVD: a projection on ``components_``, as scikit-learn computes it.

PCA: ``X @ components_.T - mean_ @ components_.T`` (the centering applied after the projection, the
second product computed here by numpy as scikit-learn computes it on each call), divided by
``sqrt(explained_variance_)`` (at least ``eps``) with ``whiten``. TruncatedSVD: ``X @ components_.T``.
The product's terms are added in another order than BLAS's (``linear``): a few ulps of
``sum |x_i * c_i|``, so a projected value near 0 (the terms cancel) has a larger relative error; the
parity check covers the model's outputs after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA, IncrementalPCA, TruncatedSVD

from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import register


def _project(graph: Graph, x: Tensor, components: np.ndarray) -> str:
    return graph.op("MatMul", [x.name, graph.const(components.T.copy(), "components")])  # type: ignore


@register(PCA, IncrementalPCA)
def convert_pca(graph: Graph, pca: Any, x: Tensor) -> Tensor:
    components = np.asarray(pca.components_, dtype=np.float64)
    out = _project(graph, numeric(x, pca), components)
    mean = np.asarray(pca.mean_, dtype=np.float64).reshape(1, -1)
    out = graph.op("Sub", [out, graph.const(mean @ components.T, "projected_mean")])
    if pca.whiten:
        scale = np.sqrt(np.asarray(pca.explained_variance_, dtype=np.float64))
        scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
        out = graph.op("Div", [out, graph.const(scale, "scale")])
    return Tensor(out, components.shape[0], nan=None)  # type: ignore[arg-type]


@register(TruncatedSVD)
def convert_truncated_svd(graph: Graph, svd: TruncatedSVD, x: Tensor) -> Tensor:
    components = np.asarray(svd.components_, dtype=np.float64)
    return Tensor(_project(graph, numeric(x, svd), components), components.shape[0], nan=None)
