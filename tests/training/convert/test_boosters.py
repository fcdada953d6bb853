"""LightGBM and XGBoost: values and probabilities to 1e-9 relative (measured: XGBoost 0, every float32
bit; LightGBM 0 for values, up to ~1e-14 for probabilities) and identical labels, on data, random, threshold
and NaN rows; native Boosters as well as the scikit-learn wrappers; unsupported models refused."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from tabserve.errors import ExportError

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

QUIET = {"verbose": -1, "n_jobs": 1}  # one thread: the tests run beside others


def _binary_proba(p: np.ndarray) -> np.ndarray:
    return np.c_[1.0 - p, p]  # float32 stays float32, as XGBClassifier computes it


# LightGBM ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [False, True])
def test_lightgbm_sklearn_models(missing, diabetes, breast_cancer, iris, exact, with_nan):
    prepare = with_nan if missing else (lambda X: X)
    X = prepare(diabetes.X)
    exact(lgb.LGBMRegressor(n_estimators=30, **QUIET).fit(X, diabetes.y), X, "regression")
    for data in (breast_cancer, iris):
        X = prepare(data.X)
        exact(lgb.LGBMClassifier(n_estimators=20, **QUIET).fit(X, data.y), X, "classification")


def test_lightgbm_string_labels_and_sigmoid(breast_cancer, exact):
    labels = np.array(["no", "yes"])[breast_cancer.y]
    model = lgb.LGBMClassifier(n_estimators=15, sigmoid=0.7, **QUIET).fit(breast_cancer.X, labels)
    exact(model, breast_cancer.X, "classification")


@pytest.mark.parametrize("params", [{"zero_as_missing": True}, {"use_missing": False}],
                         ids=["zero_as_missing", "no_missing"])
def test_lightgbm_missing_types(params, diabetes, exact, with_nan):
    """'Zero': NaN and zero take the default branch; 'None': NaN is read as zero."""
    X = with_nan(diabetes.X)
    X[np.random.default_rng(1).random(X.shape) < 0.1] = 0.0
    model = lgb.LGBMRegressor(n_estimators=25, **params, **QUIET).fit(X, diabetes.y)
    tiny = X[:50].copy()
    tiny[:, :3] = [[1e-36, -1e-36, 2e-35]] * 50
    exact(model, np.vstack([X, tiny]), "regression")


def test_lightgbm_native_boosters(diabetes, breast_cancer, iris, exact):
    booster = lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(diabetes.X, diabetes.y), 20)
    exact(booster, diabetes.X, "regression")
    booster = lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(breast_cancer.X, breast_cancer.y), 20)
    exact(booster, breast_cancer.X, "classification",
          predict_proba=lambda X: _binary_proba(booster.predict(X)),
          predict=lambda X: np.argmax(_binary_proba(booster.predict(X)), axis=1))
    booster = lgb.train({"objective": "multiclass", "num_class": 3, **QUIET}, lgb.Dataset(iris.X, iris.y), 15)
    exact(booster, iris.X, "classification", predict_proba=booster.predict,
          predict=lambda X: np.argmax(booster.predict(X), axis=1))


def test_lightgbm_best_iteration(diabetes, exact):
    X, y = diabetes.X, diabetes.y
    model = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.3, **QUIET)
    # LightGBM 4.7 takes eval_X/eval_y (eval_set deprecated); 4.6, the lowest supported, only eval_set
    held_out = ({"eval_X": (X[300:],), "eval_y": (y[300:],)} if "eval_X" in inspect.signature(model.fit).parameters
                else {"eval_set": [(X[300:], y[300:])]})
    model.fit(X[:300], y[:300], **held_out, callbacks=[lgb.early_stopping(3, verbose=False)])
    assert model.best_iteration_ < 300
    exact(model, X, "regression")


def test_lightgbm_reads_tiny_values_as_zero(diabetes, exact):
    """A split within (-1e-35, 1e-35): LightGBM reads |x| <= 1e-35f as 0 before comparing."""
    params = {"objective": "regression", "num_leaves": 2, **QUIET}
    booster = lgb.train(params, lgb.Dataset(diabetes.X, diabetes.y), 1)
    text = re.sub(r"^threshold=.*$", "threshold=1e-36", booster.model_to_string(), flags=re.MULTILINE)
    edited = lgb.Booster(model_str=text)
    feature = int(re.search(r"^split_feature=(\d+)", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    X = np.zeros((7, diabetes.X.shape[1]))
    X[:, feature] = [2e-36, 5e-37, -1.0000000180025095e-35, 1.0000000180025095e-35, 1.1e-35, -0.0, np.nan]
    exact(edited, X, "regression", probe=False)


def test_lightgbm_refusals(diabetes, run):  # native categorical splits: test_native_categorical.py
    model = lgb.LGBMRegressor(n_estimators=3, objective="poisson", **QUIET).fit(diabetes.X, diabetes.y)
    with pytest.raises(ExportError, match="objective 'poisson'"):
        run(model, diabetes.X, "regression")
    model = lgb.LGBMRegressor(n_estimators=3, linear_tree=True, **QUIET).fit(diabetes.X, diabetes.y)
    with pytest.raises(ExportError, match="linear trees"):
        run(model, diabetes.X, "regression")


# XGBoost -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [False, True])
def test_xgboost_sklearn_models(missing, diabetes, breast_cancer, iris, exact, with_nan):
    prepare = with_nan if missing else (lambda X: X)
    X = prepare(diabetes.X)
    exact(xgb.XGBRegressor(n_jobs=1, n_estimators=30, max_depth=4).fit(X, diabetes.y), X, "regression")
    for data in (breast_cancer, iris):
        X = prepare(data.X)
        exact(xgb.XGBClassifier(n_jobs=1, n_estimators=20, max_depth=3).fit(X, data.y), X, "classification")


def test_xgboost_native_boosters(diabetes, breast_cancer, iris, exact):
    def train(params, data, rounds=15):
        return xgb.train({**params, "nthread": 1}, xgb.DMatrix(data.X, data.y), rounds)

    def predict(booster):
        return lambda X: booster.predict(xgb.DMatrix(X))

    booster = train({"objective": "reg:squarederror"}, diabetes)
    exact(booster, diabetes.X, "regression", predict=predict(booster))
    booster = train({"objective": "binary:logistic", "base_score": 0.3}, breast_cancer)
    exact(booster, breast_cancer.X, "classification",
          predict_proba=lambda X: _binary_proba(predict(booster)(X)),
          predict=lambda X: (predict(booster)(X) > 0.5).astype(int))
    booster = train({"objective": "multi:softprob", "num_class": 3}, iris)
    exact(booster, iris.X, "classification", predict_proba=predict(booster),
          predict=lambda X: np.argmax(predict(booster)(X), axis=1))


def test_xgboost_logistic_regression_forests_and_early_stopping(diabetes, breast_cancer, exact):
    share = (diabetes.y - diabetes.y.min()) / np.ptp(diabetes.y)
    model = xgb.XGBRegressor(n_jobs=1, n_estimators=20, objective="reg:logistic").fit(diabetes.X, share)
    exact(model, diabetes.X, "regression")
    forest = xgb.XGBRFClassifier(n_jobs=1, n_estimators=6, max_depth=4).fit(breast_cancer.X, breast_cancer.y)
    exact(forest, breast_cancer.X, "classification")
    X, y = breast_cancer.X, breast_cancer.y
    model = xgb.XGBClassifier(n_jobs=1, n_estimators=300, learning_rate=0.5, early_stopping_rounds=3)
    model.fit(X[:400], y[:400], eval_set=[(X[400:], y[400:])], verbose=False)
    assert model.best_iteration < 299
    exact(model, X, "classification")


def test_xgboost_refusals(diabetes, run):  # native categorical splits: test_native_categorical.py
    for params, message in [({"objective": "count:poisson"}, "objective 'count:poisson'"),
                            ({"booster": "dart"}, "booster 'dart'"), ({"missing": 0.0}, "missing=0.0")]:
        model = xgb.XGBRegressor(n_jobs=1, n_estimators=3, **params).fit(diabetes.X, diabetes.y)
        with pytest.raises(ExportError, match=re.escape(message)):
            run(model, diabetes.X, "regression")
