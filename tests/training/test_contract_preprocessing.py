"""The exact-export contract for the everyday preprocessing steps (issue #16 item 4), in pipelines before
an estimator, on scikit-learn's real datasets and the contract suite's text data: ``export_verified`` on
the holdout and adversarial rows, max relative error <= 1e-9 and identical labels.

(Kept apart from test_contract.py, which other families extend, with its data helpers reused.)"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_linnerud
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.feature_selection import (
    SelectKBest,
    SelectPercentile,
    VarianceThreshold,
    f_classif,
    f_regression,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeClassifier, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
    KBinsDiscretizer,
    MinMaxScaler,
    Normalizer,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    QuantileTransformer,
    SplineTransformer,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeRegressor

from tabserve.training.estimators import fit_input
from tabserve.training.parity import export_verified
from tests.training.test_contract import CATEGORICAL, MAX_REL, Data, _data, _labels, _real_data, synthetic

# name -> (dataset, task, classes, pipeline factory)
PREPROCESSED: dict[str, tuple[str, str, int, Callable[[], Any]]] = {
    "poly2-ridge": ("diabetes", "regression", 0,
                    lambda: make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge())),
    "exp-linear": ("diabetes", "regression", 0, lambda: make_pipeline(FunctionTransformer(np.exp), LinearRegression())),
    "normalizer-ridge": ("diabetes", "regression", 0, lambda: make_pipeline(Normalizer(), Ridge(alpha=0.1))),
    "pca_whiten-linear": ("diabetes", "regression", 0, lambda: make_pipeline(PCA(whiten=True), LinearRegression())),
    "svd-ridge": ("diabetes", "regression", 0, lambda: make_pipeline(TruncatedSVD(5, random_state=0), Ridge())),
    "kbest-gradient_boosting": ("diabetes", "regression", 0, lambda: make_pipeline(
        SelectKBest(f_regression, k=5), GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0))),
    "variance-tree": ("diabetes", "regression", 0,
                      lambda: make_pipeline(VarianceThreshold(0.002), DecisionTreeRegressor(max_depth=5))),
    "binarizer-ridge": ("diabetes", "regression", 0, lambda: make_pipeline(Binarizer(), Ridge())),
    "poly2-ridge-linnerud": ("linnerud", "regression", 0,
                             lambda: make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge())),
    "log1p-logistic": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        FunctionTransformer(np.log1p), StandardScaler(), LogisticRegression(max_iter=2000))),
    "kbest-forest": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        SelectKBest(f_classif, k=8), RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0))),
    "pca-logistic": ("breast_cancer", "classification", 2,
                     lambda: make_pipeline(StandardScaler(), PCA(5), LogisticRegression(max_iter=2000))),
    "normalizer-svc": ("breast_cancer", "classification", 2,
                       lambda: make_pipeline(Normalizer(), StandardScaler(), LinearSVC(random_state=0))),
    "interactions-logistic": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        StandardScaler(), PolynomialFeatures(2, interaction_only=True), LogisticRegression(C=0.1, max_iter=3000))),
    "pca-logistic-wine": ("wine", "classification", 3,
                          lambda: make_pipeline(StandardScaler(), PCA(4), LogisticRegression(max_iter=2000))),
    "percentile-hist-wine": ("wine", "classification", 3, lambda: make_pipeline(
        SelectPercentile(f_classif, percentile=50), HistGradientBoostingClassifier(max_iter=10, random_state=0))),
    "sqrt-ridge_classifier-wine": ("wine", "classification", 3, lambda: make_pipeline(
        FunctionTransformer(np.sqrt), StandardScaler(), RidgeClassifier())),
    "normalizer-sgd-iris": ("iris", "classification", 3, lambda: make_pipeline(
        Normalizer(norm="l1"), SGDClassifier(loss="log_loss", random_state=0))),
    "kbins-tree": ("diabetes", "regression", 0, lambda: make_pipeline(
        KBinsDiscretizer(n_bins=6, encode="ordinal", quantile_method="averaged_inverted_cdf"),
        DecisionTreeRegressor(max_depth=5, random_state=0))),
    "kbins_onehot-logistic": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        KBinsDiscretizer(n_bins=4, strategy="uniform"), LogisticRegression(max_iter=2000))),
    "kbins_kmeans-forest-wine": ("wine", "classification", 3, lambda: make_pipeline(
        KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="kmeans"),
        RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0))),
    "ordinal-hist-text": ("synthetic-text", "regression", 0, lambda: make_pipeline(ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), CATEGORICAL)],
        remainder="passthrough"), HistGradientBoostingRegressor(max_iter=10, random_state=0))),
    "target-ridge-text": ("synthetic-text", "regression", 0, lambda: make_pipeline(ColumnTransformer(
        [("cat", TargetEncoder(random_state=0), CATEGORICAL)], remainder=StandardScaler()), Ridge())),
    "target-logistic-text": ("synthetic-text", "classification", 3, lambda: make_pipeline(ColumnTransformer(
        [("cat", TargetEncoder(random_state=0), CATEGORICAL)], remainder=StandardScaler()),
        LogisticRegression(max_iter=2000))),
    "yeo_johnson-ridge": ("diabetes", "regression", 0, lambda: make_pipeline(PowerTransformer(), Ridge())),
    "box_cox-logistic": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        MinMaxScaler(feature_range=(1, 2)), PowerTransformer(method="box-cox"), LogisticRegression(max_iter=2000))),
    "quantile-forest-wine": ("wine", "classification", 3, lambda: make_pipeline(
        QuantileTransformer(n_quantiles=50), RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0))),
    "quantile-logistic-iris": ("iris", "classification", 3, lambda: make_pipeline(
        QuantileTransformer(n_quantiles=30), LogisticRegression(max_iter=2000))),
    "spline-ridge": ("diabetes", "regression", 0, lambda: make_pipeline(SplineTransformer(n_knots=5), Ridge())),
    "spline_linear-ridge-linnerud": ("linnerud", "regression", 0, lambda: make_pipeline(
        SplineTransformer(degree=2, n_knots=4, extrapolation="linear"), Ridge())),
    "spline_periodic-logistic": ("breast_cancer", "classification", 2, lambda: make_pipeline(
        StandardScaler(), SplineTransformer(n_knots=4, extrapolation="periodic"), LogisticRegression(max_iter=3000))),
    "spline_constant-logistic-wine": ("wine", "classification", 3, lambda: make_pipeline(
        SplineTransformer(n_knots=4, knots="quantile", extrapolation="constant"), StandardScaler(),
        LogisticRegression(max_iter=3000))),
    "yeo_johnson-hist-text": ("synthetic-text", "classification", 3, lambda: make_pipeline(ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), CATEGORICAL)],
        remainder=PowerTransformer()), HistGradientBoostingClassifier(max_iter=10, random_state=0))),
}


@cache
def _linnerud() -> Data:
    bunch = load_linnerud(as_frame=True)
    return _data(bunch.data, bunch.target["Weight"].to_numpy(dtype=np.float64), "regression")


def dataset_for(dataset: str, task: str, classes: int) -> Data:
    if dataset == "linnerud":
        return _linnerud()
    return synthetic(task, classes, "text") if dataset == "synthetic-text" else _real_data(dataset)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(PREPROCESSED))
def test_exact_export_contract_of_everyday_preprocessing(name):
    dataset, task, classes, factory = PREPROCESSED[name]
    data = dataset_for(dataset, task, classes)
    y = data.y_train if task == "regression" else _labels(data.y_train, classes, name)
    model = factory().fit(fit_input(data.train), y)

    verified = export_verified(model, data.features, task, data.holdout, data.holdout_ids)

    parity = verified.parity
    assert parity.passed and parity.label_mismatches == 0
    assert parity.max_rel_diff <= MAX_REL, parity.worst_details
    if any(k in name for k in ("kbest", "percentile", "variance", "kbins-tree", "kbins_kmeans-forest")):
        assert parity.probes["thresholds"] > 0 and parity.adversarial_rows > 0  # mapped back through the step
    if dataset == "synthetic-text":
        assert parity.probes["categories"] == 5 + 2 + 2  # every category and an unseen one per feature
