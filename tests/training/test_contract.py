"""The exact-export contract, for every supported estimator x task x preprocessing.

Each case fits a small model, exports it, and checks it with ``export_verified`` on its holdout rows and
on adversarial rows (every split threshold and the float32/double values next to it, every category,
NaN where the model takes missing values): max relative error <= 1e-9 and identical labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.compose import ColumnTransformer
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_iris,
    load_wine,
    make_classification,
    make_regression,
)
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    GammaRegressor,
    HuberRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    PoissonRegressor,
    QuantileRegressor,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
    TweedieRegressor,
)
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestCentroid
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR, NuSVC, NuSVR
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from xgboost import XGBClassifier, XGBRegressor

from tabserve.core.manifest import Feature
from tabserve.training.convert.registry import lookup
from tabserve.training.estimators import fit_input
from tabserve.training.parity import export_verified

MAX_REL = 1e-9

# name -> (factory, accepts NaN); small models: a few shallow trees
REGRESSORS: dict[str, tuple[Callable[[], Any], bool]] = {
    "decision_tree": (lambda: DecisionTreeRegressor(max_depth=6, random_state=0), True),
    "random_forest": (lambda: RandomForestRegressor(n_estimators=5, max_depth=6, random_state=0, n_jobs=1), True),
    "extra_trees": (lambda: ExtraTreesRegressor(n_estimators=5, max_depth=6, random_state=0, n_jobs=1), True),
    "gradient_boosting": (lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0), False),
    "hist_gradient_boosting": (lambda: HistGradientBoostingRegressor(max_iter=10, random_state=0), True),
    "linear": (LinearRegression, False),
    "ridge": (lambda: Ridge(alpha=1.0), False),
    "lasso": (lambda: Lasso(alpha=0.1), False),
    "elastic_net": (lambda: ElasticNet(alpha=0.1, l1_ratio=0.5), False),
    "huber": (lambda: HuberRegressor(max_iter=1000), False),
    "quantile": (lambda: QuantileRegressor(quantile=0.7, alpha=0.01), False),
    "bayesian_ridge": (BayesianRidge, False),
    "ard": (ARDRegression, False),
    "linear_svr": (lambda: LinearSVR(random_state=0, max_iter=5000), False),
    "sgd": (lambda: SGDRegressor(random_state=0), False),
    "lightgbm": (lambda: LGBMRegressor(n_estimators=10, num_leaves=8, random_state=0, n_jobs=1, verbose=-1), True),
    "xgboost": (lambda: XGBRegressor(n_estimators=10, max_depth=3, random_state=0, n_jobs=1), True),
}
CLASSIFIERS: dict[str, tuple[Callable[[], Any], bool]] = {
    "decision_tree": (lambda: DecisionTreeClassifier(max_depth=6, random_state=0), True),
    "random_forest": (lambda: RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0, n_jobs=1), True),
    "extra_trees": (lambda: ExtraTreesClassifier(n_estimators=5, max_depth=6, random_state=0, n_jobs=1), True),
    "gradient_boosting": (lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0), False),
    "hist_gradient_boosting": (lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0), True),
    "logistic": (lambda: LogisticRegression(max_iter=2000), False),
    "sgd_log_loss": (lambda: SGDClassifier(loss="log_loss", random_state=0), False),
    "sgd_modified_huber": (lambda: SGDClassifier(loss="modified_huber", random_state=0), False),
    "sgd_hinge": (lambda: SGDClassifier(random_state=0), False),  # labels only, as the next three
    "ridge_classifier": (RidgeClassifier, False),
    "linear_svc": (lambda: LinearSVC(random_state=0), False),
    "perceptron": (lambda: Perceptron(random_state=0), False),
    "lightgbm": (lambda: LGBMClassifier(n_estimators=10, num_leaves=8, random_state=0, n_jobs=1, verbose=-1),
                 True),
    "xgboost": (lambda: XGBClassifier(n_estimators=10, max_depth=3, random_state=0, n_jobs=1), True),
}
# generalized linear models need positive targets: diabetes only
GLMS: dict[str, tuple[Callable[[], Any], bool]] = {
    "poisson": (PoissonRegressor, False),
    "gamma": (lambda: GammaRegressor(alpha=0.1), False),
    "tweedie": (lambda: TweedieRegressor(power=1.5, alpha=0.1), False),
}
PREPROCESSING = ("bare", "standard", "minmax", "robust", "imputer", "missing", "columns")
CATEGORICAL = ["city", "size"]


@dataclass(frozen=True)
class Data:
    train: pd.DataFrame
    y_train: np.ndarray
    holdout: pd.DataFrame
    holdout_ids: np.ndarray
    features: list[Feature]


def _data(X: pd.DataFrame, y: np.ndarray, task: str, handle_unknown: str = "ignore") -> Data:
    ids = np.arange(len(X))
    X_train, X_hold, y_train, _, _, hold_ids = train_test_split(
        X, y, ids, test_size=0.3, random_state=0, stratify=y if task == "classification" else None)
    features = []
    for name in X.columns:
        if X[name].dtype == object:
            features.append(Feature(name=name, dtype="str", kind="categorical", handle_unknown=handle_unknown,
                                    categories=sorted(set(X[name]))))
        else:
            features.append(Feature(name=name, dtype="float64", allow_missing=bool(X_train[name].isna().any())))
    return Data(X_train.reset_index(drop=True), y_train, X_hold.reset_index(drop=True), hold_ids, features)


@cache
def synthetic(task: str, classes: int, kind: str) -> Data:
    """300 rows, 6 numeric features; ``kind``: 'plain', 'nan' (10% missing in x1 and x4) or 'text' (two
    string features that move the target)."""
    rng = np.random.default_rng(0)
    if task == "regression":
        X, y = make_regression(n_samples=300, n_features=6, n_informative=4, noise=5.0, random_state=0)
    else:
        X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_redundant=1,
                                   n_classes=classes, random_state=0)
    frame = pd.DataFrame(X * [1, 10, 0.01, 100, 1, 3] + [0, 50, 0, -7, 0, 1],
                         columns=[f"x{i}" for i in range(6)])
    if kind == "nan":
        for col in ("x1", "x4"):
            frame.loc[rng.random(len(frame)) < 0.1, col] = np.nan
    if kind == "text":
        city = rng.choice(["Paris", "Lyon", "Nice", "Brest", "Metz"], len(frame))
        frame.insert(2, "city", pd.Series(city, dtype=object))
        frame["size"] = pd.Series(np.where(rng.random(len(frame)) < 0.5, "S", "L"), dtype=object)
        if task == "regression":
            y = y + (city == "Paris") * 40.0 - (frame["size"] == "S").to_numpy() * 25.0
    return _data(frame, y, task)


@cache
def real(name: str) -> Data:
    loader = {"diabetes": load_diabetes, "breast_cancer": load_breast_cancer, "iris": load_iris}[name]
    bunch = loader(as_frame=True)
    return _data(bunch.data, bunch.target.to_numpy(), "regression" if name == "diabetes" else "classification")


def _model(estimator: Any, prep: str, data: Data) -> Any:
    numeric = [f.name for f in data.features if f.kind == "numeric"]
    steps = {
        "bare": [],
        "missing": [],
        "standard": [StandardScaler()],
        "minmax": [MinMaxScaler()],
        "robust": [RobustScaler(quantile_range=(10, 90))],
        "imputer": [SimpleImputer(strategy="median", add_indicator=True), StandardScaler()],
        "columns": [ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                                        CATEGORICAL), ("num", StandardScaler(), numeric)])],
    }[prep]
    return make_pipeline(*steps, estimator) if steps else estimator


def _labels(y: np.ndarray, classes: int, estimator: str) -> np.ndarray:
    """String labels for binary problems (XGBoost takes only 0..K-1), ints otherwise."""
    if classes == 2 and estimator != "xgboost":
        return np.array(["no", "yes"], dtype=object)[y]
    return y


def _cases() -> list[Any]:
    cases = []
    tasks = [("regression", 0, REGRESSORS), ("classification", 2, CLASSIFIERS), ("classification", 3, CLASSIFIERS)]
    for task, classes, table in tasks:
        for name, (_, takes_nan) in table.items():
            for prep in PREPROCESSING:
                if prep == "missing" and not takes_nan:
                    continue
                kind = {"imputer": "nan", "missing": "nan", "columns": "text"}.get(prep, "plain")
                label = f"{name}-{task[:5]}{classes or ''}-{prep}"
                cases.append(pytest.param(name, task, classes, prep, f"synthetic-{kind}", id=label))
    for name in REGRESSORS:
        cases.append(pytest.param(name, "regression", 0, "standard", "diabetes", id=f"{name}-regre-diabetes"))
    for name in GLMS:
        for prep in ("bare", "standard", "minmax", "robust"):
            cases.append(pytest.param(name, "regression", 0, prep, "diabetes", id=f"{name}-regre-{prep}-diabetes"))
    for name in CLASSIFIERS:
        cases.append(pytest.param(name, "classification", 2, "bare", "breast_cancer",
                                  id=f"{name}-class2-breast_cancer"))
        cases.append(pytest.param(name, "classification", 3, "standard", "iris", id=f"{name}-class3-iris"))
    return cases


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # logistic on raw breast_cancer
@pytest.mark.parametrize(("name", "task", "classes", "prep", "dataset"), _cases())
def test_exact_export_contract(name, task, classes, prep, dataset):
    table = {**REGRESSORS, **GLMS} if task == "regression" else CLASSIFIERS
    estimator = table[name][0]()
    data = real(dataset) if not dataset.startswith("synthetic") else synthetic(task, classes, dataset.split("-")[1])
    y = data.y_train if task == "regression" else _labels(data.y_train, classes, name)
    model = _model(estimator, prep, data).fit(fit_input(data.train), y)

    verified = export_verified(model, data.features, task, data.holdout, data.holdout_ids)

    parity = verified.parity
    assert parity.passed and parity.label_mismatches == 0
    assert parity.max_rel_diff <= MAX_REL, parity.worst_details
    assert parity.rows_checked == len(data.holdout) + parity.adversarial_rows
    if lookup(estimator).thresholds is not None:
        assert parity.probes["thresholds"] > 0 and parity.adversarial_rows > 0
    if prep in ("imputer", "missing"):
        assert parity.probes["missing"] == 2  # x1 and x4
    if prep == "columns":
        assert parity.probes["categories"] == 5 + 2 + 2  # every category and an unseen one per feature
    if task == "classification" and hasattr(model, "predict_proba"):
        assert verified.exported.outputs[1]["shape"] == [None, classes]
    elif task == "classification":  # labels only (RidgeClassifier, LinearSVC, ...): no probabilities served
        assert [o["role"] for o in verified.exported.outputs] == ["label"]


# Neural nets, naive Bayes and discriminant analysis (and, as they come, kernels and neighbours): regression on
# diabetes, binary on breast_cancer (string labels), multiclass on iris and wine, behind a scaler.
# name -> (regressor or None, classifier or None, preprocessing)
FAMILIES: dict[str, tuple[Callable[[], Any] | None, Callable[[], Any] | None, str]] = {
    "mlp_relu": (lambda: MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0),
                 lambda: MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0), "standard"),
    "mlp_tanh": (lambda: MLPRegressor(hidden_layer_sizes=(8, 8), activation="tanh", max_iter=300, random_state=0),
                 lambda: MLPClassifier(hidden_layer_sizes=(8, 8), activation="tanh", max_iter=300, random_state=0),
                 "standard"),
    "mlp_logistic": (lambda: MLPRegressor(hidden_layer_sizes=(8,), activation="logistic", max_iter=300,
                                          random_state=0),
                     lambda: MLPClassifier(hidden_layer_sizes=(8,), activation="logistic", max_iter=300,
                                           random_state=0), "standard"),
    "gaussian_nb": (None, GaussianNB, "bare"),
    "multinomial_nb": (None, MultinomialNB, "minmax"),
    "complement_nb": (None, ComplementNB, "minmax"),
    "bernoulli_nb": (None, lambda: BernoulliNB(binarize=0.5), "minmax"),
    "lda": (None, LinearDiscriminantAnalysis, "standard"),
    "qda": (None, lambda: QuadraticDiscriminantAnalysis(reg_param=0.01), "standard"),
    "svm_rbf": (lambda: SVR(C=10.0), lambda: SVC(probability=True, random_state=0), "standard"),
    "svm_linear": (lambda: SVR(kernel="linear"),
                   lambda: SVC(kernel="linear", probability=True, random_state=0), "standard"),
    "svm_poly": (lambda: NuSVR(kernel="poly", C=10.0),
                 lambda: NuSVC(kernel="poly", nu=0.1, probability=True, random_state=0), "standard"),
    "svm_sigmoid": (lambda: SVR(kernel="sigmoid"), lambda: SVC(kernel="sigmoid"), "standard"),  # labels only
    # brute: the dot-product distances; a brute classifier with string labels fails in scikit-learn 1.6 itself
    "knn": (lambda: KNeighborsRegressor(algorithm="brute"), lambda: KNeighborsClassifier(algorithm="kd_tree"),
            "standard"),
    "knn_distance": (lambda: KNeighborsRegressor(n_neighbors=9, weights="distance", algorithm="kd_tree"),
                     lambda: KNeighborsClassifier(n_neighbors=9, weights="distance", algorithm="ball_tree"),
                     "standard"),
    "nearest_centroid": (None, NearestCentroid, "standard"),
}


@cache
def _real_data(name: str) -> Data:
    if name != "wine":
        return real(name)
    bunch = load_wine(as_frame=True)
    return _data(bunch.data, bunch.target.to_numpy(), "classification")


def _family_cases() -> list[Any]:
    cases = []
    for name, (regressor, classifier, _) in FAMILIES.items():
        if regressor is not None:
            cases.append(pytest.param(name, "regression", 0, "diabetes", id=f"{name}-diabetes"))
        if classifier is not None:
            cases += [pytest.param(name, "classification", 2, "breast_cancer", id=f"{name}-breast_cancer"),
                      pytest.param(name, "classification", 3, "iris", id=f"{name}-iris"),
                      pytest.param(name, "classification", 3, "wine", id=f"{name}-wine")]
    return cases


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:The `probability` parameter was deprecated:FutureWarning")  # SVC, 1.9
@pytest.mark.parametrize(("name", "task", "classes", "dataset"), _family_cases())
def test_exact_export_contract_of_more_families(name, task, classes, dataset):
    regressor, classifier, prep = FAMILIES[name]
    estimator = (regressor if task == "regression" else classifier)()  # type: ignore[misc]
    data = _real_data(dataset)
    y = data.y_train if task == "regression" else _labels(data.y_train, classes, name)
    model = _model(estimator, prep, data).fit(fit_input(data.train), y)

    verified = export_verified(model, data.features, task, data.holdout, data.holdout_ids)

    parity = verified.parity
    assert parity.passed and parity.label_mismatches == 0
    assert parity.max_rel_diff <= MAX_REL, parity.worst_details
    assert parity.rows_checked == len(data.holdout) + parity.adversarial_rows
    if lookup(estimator).thresholds is not None and lookup(estimator).thresholds(estimator):  # BernoulliNB
        assert parity.probes["thresholds"] > 0 and parity.adversarial_rows > 0
    if task == "classification" and hasattr(model, "predict_proba"):
        assert verified.exported.outputs[1]["shape"] == [None, classes]
    elif task == "classification":  # labels only (RidgeClassifier, LinearSVC, ...): no probabilities served
        assert [o["role"] for o in verified.exported.outputs] == ["label"]


# Meta-estimators (issue #16 item 5): members converted by their own converters, combined as scikit-learn does.
# name -> (regressor or None, classifier or None, preprocessing); imported here to leave the shared header alone.
def _meta_estimators() -> dict[str, tuple[Callable[[], Any] | None, Callable[[], Any] | None, str]]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import (
        AdaBoostClassifier,
        AdaBoostRegressor,
        BaggingClassifier,
        BaggingRegressor,
        StackingClassifier,
        StackingRegressor,
        VotingClassifier,
        VotingRegressor,
    )
    from sklearn.multiclass import OneVsRestClassifier

    def forest_c() -> Any:
        return RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0, n_jobs=1)

    def forest_r() -> Any:
        return RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0, n_jobs=1)

    classifiers = [("logistic", LogisticRegression(max_iter=2000)), ("forest", forest_c()), ("bayes", GaussianNB())]
    regressors = [("ridge", Ridge()), ("forest", forest_r()), ("tree", DecisionTreeRegressor(max_depth=4))]
    return {
        "voting_soft": (lambda: VotingRegressor(regressors, weights=[2, 1, 1]),
                        lambda: VotingClassifier(classifiers, voting="soft", weights=[1, 2, 1]), "standard"),
        "voting_hard": (None, lambda: VotingClassifier([*classifiers, ("ridge", RidgeClassifier())], voting="hard"),
                        "standard"),
        "stacking": (lambda: StackingRegressor(regressors, cv=3),
                     lambda: StackingClassifier([*classifiers, ("svc", LinearSVC())], cv=3), "standard"),
        "stacking_passthrough": (lambda: StackingRegressor(regressors, passthrough=True, cv=3),
                                 lambda: StackingClassifier(classifiers, passthrough=True, cv=3), "standard"),
        "target_log": (lambda: TransformedTargetRegressor(forest_r(), func=np.log1p, inverse_func=np.expm1),
                       None, "bare"),
        "target_scaler": (lambda: TransformedTargetRegressor(Ridge(), transformer=StandardScaler()), None, "standard"),
        "bagging": (lambda: BaggingRegressor(DecisionTreeRegressor(max_depth=5), n_estimators=5, max_features=0.7,
                                             random_state=0),
                    lambda: BaggingClassifier(DecisionTreeClassifier(max_depth=5), n_estimators=5, max_features=0.7,
                                              random_state=0), "bare"),
        "calibrated_sigmoid": (None, lambda: CalibratedClassifierCV(LogisticRegression(max_iter=2000), cv=3),
                               "standard"),
        "calibrated_isotonic": (None, lambda: CalibratedClassifierCV(forest_c(), method="isotonic", cv=3), "bare"),
        "one_vs_rest": (None, lambda: OneVsRestClassifier(LogisticRegression(max_iter=2000)), "standard"),
        "adaboost": (lambda: AdaBoostRegressor(DecisionTreeRegressor(max_depth=3), n_estimators=10, random_state=0),
                     lambda: AdaBoostClassifier(n_estimators=10, random_state=0), "bare"),
    }


def _meta_cases() -> list[Any]:
    cases = []
    for name, (regressor, classifier, _) in _meta_estimators().items():
        if regressor is not None:
            cases.append(pytest.param(name, "regression", 0, "diabetes", id=f"{name}-diabetes"))
        if classifier is not None:
            cases += [pytest.param(name, "classification", 2, "breast_cancer", id=f"{name}-breast_cancer"),
                      pytest.param(name, "classification", 3, "iris", id=f"{name}-iris")]
    # text columns one-hot encoded by a ColumnTransformer in front (log1p needs targets above -1: not there)
    for name, (regressor, classifier, _) in _meta_estimators().items():
        if regressor is not None and name != "target_log":
            cases.append(pytest.param(name, "regression", 0, "synthetic-text", id=f"{name}-regre-columns"))
        if classifier is not None:
            cases.append(pytest.param(name, "classification", 3, "synthetic-text", id=f"{name}-class3-columns"))
    return cases


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("name", "task", "classes", "dataset"), _meta_cases())
def test_exact_export_contract_of_meta_estimators(name, task, classes, dataset):
    regressor, classifier, prep = _meta_estimators()[name]
    estimator = (regressor if task == "regression" else classifier)()  # type: ignore[misc]
    if dataset == "synthetic-text":
        data, prep = synthetic(task, classes, "text"), "columns"
    else:
        data = _real_data(dataset)
    y = data.y_train if task == "regression" else _labels(data.y_train, classes, name)
    model = _model(estimator, prep, data).fit(fit_input(data.train), y)

    verified = export_verified(model, data.features, task, data.holdout, data.holdout_ids)

    parity = verified.parity
    assert parity.passed and parity.label_mismatches == 0
    assert parity.max_rel_diff <= MAX_REL, parity.worst_details
    assert parity.rows_checked == len(data.holdout) + parity.adversarial_rows
    if name in ("bagging", "adaboost", "target_log", "calibrated_isotonic"):  # trees: their thresholds probed
        assert parity.probes["thresholds"] > 0 and parity.adversarial_rows > 0
    if prep == "columns":
        assert parity.probes["categories"] == 5 + 2 + 2  # every category and an unseen one per feature
    if task == "classification" and hasattr(model, "predict_proba"):
        assert verified.exported.outputs[1]["shape"] == [None, classes]
    elif task == "classification":  # hard voting: labels only
        assert [o["role"] for o in verified.exported.outputs] == ["label"]


# CatBoost (issue #16 item 6): numbers as they are, or behind a scaler, NaN routed (nan_mode Min and Max), text
# one-hot encoded before it (what a model with categorical features is told to do); labels as CatBoost's.
def _catboost_cases() -> list[Any]:
    cases = []
    for task, classes in (("regression", 0), ("classification", 2), ("classification", 3)):
        for prep in ("bare", "standard", "missing", "columns"):
            kind = {"missing": "nan", "columns": "text"}.get(prep, "plain")
            cases.append(pytest.param(task, classes, prep, f"synthetic-{kind}",
                                      id=f"catboost-{task[:5]}{classes or ''}-{prep}"))
    for task, classes, dataset in (("regression", 0, "diabetes"), ("classification", 2, "breast_cancer"),
                                   ("classification", 3, "iris"), ("classification", 3, "wine")):
        cases.append(pytest.param(task, classes, "bare", dataset, id=f"catboost-{dataset}"))
    return cases


@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
@pytest.mark.parametrize(("task", "classes", "prep", "dataset"), _catboost_cases())
def test_exact_export_contract_of_catboost(task, classes, prep, dataset, nan_mode):
    catboost = pytest.importorskip("catboost")
    quiet = {"iterations": 20, "depth": 6, "nan_mode": nan_mode, "verbose": 0, "thread_count": 1, "random_seed": 0,
             "allow_writing_files": False}
    estimator = catboost.CatBoostRegressor(**quiet) if task == "regression" else catboost.CatBoostClassifier(**quiet)
    data = _real_data(dataset) if not dataset.startswith("synthetic") else synthetic(task, classes,
                                                                                     dataset.split("-")[1])
    y = data.y_train if task == "regression" else _labels(data.y_train, classes, "catboost")
    model = _model(estimator, prep, data).fit(fit_input(data.train), y)

    verified = export_verified(model, data.features, task, data.holdout, data.holdout_ids)

    parity = verified.parity
    assert parity.passed and parity.label_mismatches == 0
    assert parity.max_rel_diff <= MAX_REL, parity.worst_details
    assert parity.probes["thresholds"] > 0 and parity.adversarial_rows > 0
    if prep == "missing":
        assert parity.probes["missing"] == 2  # x1 and x4
    if task == "classification":
        assert verified.exported.outputs[1]["shape"] == [None, classes]
