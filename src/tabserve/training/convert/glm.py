"""Generalized linear models (PoissonRegressor, GammaRegressor, TweedieRegressor): a link's inverse of
``X @ coef_ + intercept_``.

scikit-learn predicts ``link.inverse(X @ coef_ + intercept_)``: ``np.exp`` for the log link (Poisson,
Gamma, Tweedie with ``power > 0`` or ``link='log'``), the identity otherwise. onnxruntime's double ``Exp``
is within an ulp of numpy's, so the prediction inherits the dot product's few ulps (``linear``) times
``|eta|`` plus one ulp: about 1e-15 relative for any ``eta`` a fitted model produces.
"""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.linear import decision
from tabserve.training.convert.preprocess import numeric
from tabserve.training.convert.registry import Prediction, register


@register(PoissonRegressor, GammaRegressor, TweedieRegressor)
def convert_glm(graph: Graph, model: Any, x: Tensor) -> Prediction:
    eta = decision(graph, numeric(x, model), model.coef_, model.intercept_)
    link = type(model._base_loss.link).__name__
    if link == "IdentityLink":
        return Prediction(eta)
    if link == "LogLink":
        return Prediction(graph.op("Exp", [eta]))  # type: ignore[arg-type]
    raise ExportError(f"{type(model).__name__} with a {link}: no exact converter (the identity and log links "
                      "are supported)")
