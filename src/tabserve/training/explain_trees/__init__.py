"""A fitted estimator's trees (or coefficients) as the plain arrays of ``core.explain``, with what they explain.

Output spaces, as ``shap.TreeExplainer`` explains each model by default:
- forests, single trees and bagging of trees: the prediction (regression) or each class's probability
  (classifier);
- AdaBoostClassifier (SAMME) of trees: ``decision_function`` (one score for two classes), a sum of trees
  (shap.TreeExplainer reads neither Bagging nor AdaBoost; the explanation is the same TreeSHAP);
- gradient boosting (scikit-learn, HistGradientBoosting, LightGBM, XGBoost): the raw margin -- the
  prediction for a squared-error regressor, the log-odds of the positive class for a binary classifier,
  one softmax logit per class for a multiclass one, log(mean) for a Poisson/Gamma HistGradientBoosting;
- linear models: ``X @ coef_ + intercept_`` (the prediction, or the classifier's decision function);
- IsolationForest: the mean path length (``isolation``).
Covers: scikit-learn ``weighted_n_node_samples``, HistGradientBoosting ``count``, LightGBM
``internal_count``/``leaf_count``, XGBoost ``sum_hessian``.

One module per family (``sklearn_trees``, ``linear``, ``isolation``, ``lightgbm``, ``xgboost``), each filling
the node table of ``estimator``; this module picks the reader for a fitted estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    BaggingClassifier,
    BaggingRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
from sklearn.linear_model._glm.glm import _GeneralizedLinearRegressor
from sklearn.linear_model._stochastic_gradient import BaseSGDRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from tabserve.core.manifest import Task
from tabserve.training.convert import registry as convert_registry
from tabserve.training.explain_trees.estimator import Estimator, ExplainUnsupported
from tabserve.training.explain_trees.isolation import isolation
from tabserve.training.explain_trees.lightgbm import read_lightgbm
from tabserve.training.explain_trees.linear import glm, linear
from tabserve.training.explain_trees.sklearn_trees import (
    adaboost,
    bagging,
    forest,
    gradient_boosting,
    hist,
    not_additive,
)
from tabserve.training.explain_trees.xgboost import read_xgboost

__all__ = ["EXPLAINED", "Estimator", "ExplainUnsupported", "family", "read_estimator"]


def read_estimator(model: Any, task: Task) -> Estimator:
    from tabserve.training.native import NativeRegressor

    inner = model.booster if isinstance(model, NativeRegressor) else model
    library = convert_registry.library(inner)
    if library == "lightgbm":
        return read_lightgbm(model, task)
    if library == "xgboost":
        return read_xgboost(model, task)
    for kinds, reader in _READERS:
        if isinstance(model, kinds):
            return reader(model, task)
    raise ExplainUnsupported(f"{type(model).__name__} has no TreeSHAP or linear explainer in tabserve: it is "
                             f"{family(model)}; explained are {EXPLAINED}")


EXPLAINED = ("decision trees, random and extra-trees forests, bagging of trees, AdaBoost classifiers of trees, "
             "gradient boosting (scikit-learn, HistGradientBoosting, LightGBM, XGBoost, including boosted forests) "
             "and linear models (linear and logistic regression, linear SVMs, GLMs)")
# the family of an estimator tabserve serves but does not explain, by scikit-learn module or class name
_FAMILIES = {"neural_network": "a neural network", "naive_bayes": "a naive Bayes model", "svm": "a kernel SVM",
             "neighbors": "a nearest-neighbours model", "discriminant_analysis": "a discriminant analysis",
             "gaussian_process": "a Gaussian process", "kernel_ridge": "a kernel ridge regression",
             "isotonic": "an isotonic regression", "calibration": "a calibrated classifier",
             "multiclass": "a one-vs-rest/one-vs-one wrapper", "compose": "a transformed-target regressor",
             "Voting": "a voting ensemble", "Stacking": "a stacking ensemble", "Bagging": "a bagging ensemble",
             "AdaBoost": "an AdaBoost ensemble", "IsolationForest": "an isolation forest"}


def family(model: Any) -> str:
    """What kind of model ``model`` is, in words, for the one-line reason it cannot be explained."""
    name = type(model).__name__
    for prefix in ("Voting", "Stacking", "Bagging", "AdaBoost", "IsolationForest"):
        if name.startswith(prefix):
            return _FAMILIES[prefix]
    module = type(model).__module__.split(".")
    if module[0] == "sklearn":
        found = next((_FAMILIES[part] for part in module[1:] if part in _FAMILIES), None)
        return found or f"a model of scikit-learn's {'.'.join(p for p in module[1:] if not p.startswith('_'))}"
    return f"a {module[0]} model"



_READERS: list[tuple[tuple[type, ...], Callable[[Any, Task], Estimator]]] = [
    ((DecisionTreeRegressor, DecisionTreeClassifier, RandomForestRegressor, RandomForestClassifier,
      ExtraTreesRegressor, ExtraTreesClassifier), forest),
    ((GradientBoostingRegressor, GradientBoostingClassifier), gradient_boosting),
    ((HistGradientBoostingRegressor, HistGradientBoostingClassifier), hist),
    ((LinearModel, LogisticRegression, LinearClassifierMixin, BaseSGDRegressor), linear),
    ((_GeneralizedLinearRegressor,), lambda m, task: glm(m)),
    ((BaggingRegressor, BaggingClassifier), bagging),
    ((AdaBoostClassifier,), adaboost),
    ((AdaBoostRegressor,), not_additive),
    ((IsolationForest,), isolation),
]
