"""Linear models and GLMs as coefficients: ``X @ coef_ + intercept_`` (the prediction, the classifier's
decision function, or a GLM's linear predictor)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tabserve.core.manifest import Task
from tabserve.training.explain_trees.estimator import Estimator, ExplainUnsupported, as_2d, labels


def linear(model: Any, task: Task) -> Estimator:
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(model.intercept_, dtype=np.float64), (coef.shape[0],)).copy()
    if task == "classification":
        return Estimator("linear", "margin", labels(model, task, coef.shape[0]),
                         lambda m, x: as_2d(m.decision_function(x)), linear=(coef, intercept))
    if coef.shape[0] != 1:
        raise ExplainUnsupported(f"{type(model).__name__} with several outputs cannot be explained")
    return Estimator("linear", "value", ["prediction"], lambda m, x: as_2d(m.predict(x)), linear=(coef, intercept))


def glm(model: Any) -> Estimator:
    """Poisson, Gamma, Tweedie: contributions to the linear predictor (the log of a log link's prediction)."""
    coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
    intercept = np.array([float(model.intercept_)])
    identity = type(model._base_loss.link).__name__ == "IdentityLink"
    return Estimator("linear", "value" if identity else "margin", ["prediction"],
                     lambda m, x: as_2d(m._linear_predictor(x)), linear=(coef, intercept))
