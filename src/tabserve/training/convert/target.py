"""TransformedTargetRegressor: the regressor's prediction, then ``transformer_.inverse_transform``.

- ``func``/``inverse_func``: scikit-learn keeps them in a FunctionTransformer; the inverse is exported as a
  FunctionTransformer of ``inverse_func`` (``elementwise``: a numpy ufunc such as ``np.expm1`` or
  ``np.exp``, exact to an ulp or two; the identity when it is None);
- a fitted scaler, with scikit-learn's operations in its order: StandardScaler and RobustScaler
  ``y * scale_ + mean_`` (``center_``), MinMaxScaler ``(y - min_) / scale_``, MaxAbsScaler ``y * scale_``.
  Other transformers are refused, naming these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.members import member_thresholds
from tabserve.training.convert.registry import Prediction, convert, register


def _inverse(graph: Graph, transformer: Any, y: str) -> str:
    c = graph.const
    if isinstance(transformer, FunctionTransformer):
        inverse = FunctionTransformer(func=transformer.inverse_func, kw_args=transformer.inv_kw_args)
        return convert(graph, inverse, Tensor(y, 1)).name
    if isinstance(transformer, StandardScaler | RobustScaler):
        scale = transformer.scale_
        center = transformer.mean_ if isinstance(transformer, StandardScaler) else transformer.center_
        if scale is not None and getattr(transformer, "with_std", getattr(transformer, "with_scaling", True)):
            y = graph.op("Mul", [y, c(np.asarray(scale, np.float64), "scale")])  # type: ignore[assignment]
        centered = getattr(transformer, "with_mean", getattr(transformer, "with_centering", True))
        if center is not None and centered:
            y = graph.op("Add", [y, c(np.asarray(center, np.float64), "center")])  # type: ignore[assignment]
        return y
    if isinstance(transformer, MinMaxScaler):
        y = graph.op("Sub", [y, c(np.asarray(transformer.min_, np.float64), "min")])  # type: ignore[assignment]
        return graph.op("Div", [y, c(np.asarray(transformer.scale_, np.float64), "scale")])  # type: ignore[return-value]
    if isinstance(transformer, MaxAbsScaler):
        return graph.op("Mul", [y, c(np.asarray(transformer.scale_, np.float64), "scale")])  # type: ignore[return-value]
    raise ExportError(f"TransformedTargetRegressor(transformer={type(transformer).__name__}) cannot be "
                      "exported; use func/inverse_func with numpy ufuncs (e.g. np.log1p and np.expm1) or "
                      "StandardScaler, RobustScaler, MinMaxScaler or MaxAbsScaler")


def _thresholds(model: Any) -> dict[int, np.ndarray]:
    return member_thresholds([(model.regressor_, None)])


@register(TransformedTargetRegressor, thresholds=_thresholds)
def convert_transformed_target(graph: Graph, model: Any, x: Tensor) -> Prediction:
    result = convert(graph, model.regressor_, x)
    if not isinstance(result, Prediction):
        raise ExportError("TransformedTargetRegressor's regressor is not a regressor")
    if getattr(model, "_training_dim", 1) != 1:
        raise ExportError("TransformedTargetRegressor fitted on several targets: tabserve serves one")
    return Prediction(_inverse(graph, model.transformer_, result.values), flat=result.flat)
