"""TransformedTargetRegressor: numpy ufunc pairs and fitted scalers, the predictions within 1e-9 relative
of scikit-learn's on data rows, random rows and rows at the regressor's split thresholds; other target
transformers are refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    PowerTransformer,
    RobustScaler,
    StandardScaler,
)
from sklearn.tree import DecisionTreeRegressor

from tabserve.errors import ExportError
from tabserve.training.convert import FeatureSpec, export_exact

FUNCTIONS = {
    "log1p_expm1": (np.log1p, np.expm1),
    "log_exp": (np.log, np.exp),
    "sqrt_square": (np.sqrt, np.square),
    "identity": (None, None),
}
SCALERS = {
    "standard": StandardScaler,
    "standard_no_mean": lambda: StandardScaler(with_mean=False),
    "robust": RobustScaler,
    "minmax": lambda: MinMaxScaler(feature_range=(-1, 3)),
    "maxabs": MaxAbsScaler,
}


def _regressor(kind: str):
    if kind == "tree":
        return DecisionTreeRegressor(max_depth=6, random_state=0)
    if kind == "forest":
        return RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0, n_jobs=1)
    return make_pipeline(StandardScaler(), Ridge())


@pytest.mark.parametrize("regressor", ["linear", "tree", "forest"])
@pytest.mark.parametrize("functions", FUNCTIONS)
def test_ufunc_pairs(functions, regressor, diabetes, exact):
    func, inverse = FUNCTIONS[functions]
    model = TransformedTargetRegressor(_regressor(regressor), func=func, inverse_func=inverse)
    model.fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


@pytest.mark.parametrize("regressor", ["linear", "tree"])
@pytest.mark.parametrize("scaler", SCALERS)
def test_fitted_scalers(scaler, regressor, diabetes, exact):
    model = TransformedTargetRegressor(_regressor(regressor), transformer=SCALERS[scaler]())
    model.fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_other_transformers_and_python_functions_are_refused(diabetes):
    features = [FeatureSpec(f"f{i}") for i in range(diabetes.X.shape[1])]
    power = TransformedTargetRegressor(LinearRegression(), transformer=PowerTransformer())
    with pytest.raises(ExportError, match="transformer=PowerTransformer.*StandardScaler"):
        export_exact(power.fit(diabetes.X, diabetes.y), features, "regression")
    python = TransformedTargetRegressor(LinearRegression(), func=lambda y: y / 2,
                                        inverse_func=lambda y: y * 2)
    with pytest.raises(ExportError, match="runs Python code"):
        export_exact(python.fit(diabetes.X, diabetes.y), features, "regression")
