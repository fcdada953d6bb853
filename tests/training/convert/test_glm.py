"""PoissonRegressor, GammaRegressor, TweedieRegressor: the link's inverse of the linear predictor, within
1e-9 relative of scikit-learn's predict (measured: about 1e-15), on diabetes and far outside its range."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import GammaRegressor, PoissonRegressor, TweedieRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.training.export import export_onnx
from tests.training.convert.test_linear import REL, _onnx, _rel

GLMS = [PoissonRegressor(), PoissonRegressor(alpha=0.0, fit_intercept=False), GammaRegressor(alpha=0.1),
        TweedieRegressor(power=0.0), TweedieRegressor(power=1.5, alpha=0.1), TweedieRegressor(power=3.0, alpha=1e-4),
        TweedieRegressor(power=1.0, link="log"), TweedieRegressor(power=0.0, link="log")]


@pytest.mark.parametrize("glm", GLMS, ids=repr)
def test_glms_predict_through_their_link(glm):
    X, y = load_diabetes(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter on the unscaled targets
        model = make_pipeline(StandardScaler(), glm).fit(X, y)
    rows = np.vstack([X, X * 4, -3 * X])  # exp of larger linear predictors too
    out = _onnx(model, rows, "regression")
    expected = model.predict(rows)
    log_link = glm._base_loss.link.__class__.__name__ == "LogLink"
    # the identity link is the dot product itself, whose few ulps of sum|x_i * w_i| (``linear``) are
    # relative to a prediction its terms may cancel to near 0: as scikit-learn 1.6 fits TweedieRegressor(),
    # -0.034 from terms summing to 373, 1.7e-12 relative (5.7e-14 absolute, 1.5e-16 of the terms). Held to
    # the contract's 1e-9 there; exp (log link) turns the dot product's absolute error into a relative one
    assert _rel(out.values, expected) < (REL if log_link else 1e-9)
    if log_link:
        assert expected.max() / expected.min() > 10  # the link is not linear over these rows


def test_an_identity_link_is_the_linear_predictor():
    X, y = load_diabetes(return_X_y=True)
    model = TweedieRegressor(power=0.0, link="identity").fit(X, y)
    exported = export_onnx(model, X.shape[1], "regression")
    assert b"Exp" not in exported.onnx_bytes
    assert _rel(_onnx(model, X, "regression").values, model.predict(X)) < REL
