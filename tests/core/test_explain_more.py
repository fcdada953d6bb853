"""Issue #15 item 7: every bundle that predicts explains, or says why in one line.

- a ColumnTransformer whose output is sparse (scikit-learn's default ``sparse_threshold`` with an 11-category
  one-hot), imported as a user would: the bundle's explanation equals shap's on the fitted model;
- XGBoost boosted random forests (``num_parallel_tree`` > 1): regression, binary and multiclass;
- a model family without an explainer: a one-line reason naming it and what is explained.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import tabserve
from tabserve.cli import main
from tabserve.core.explain.explainer import Explainer, ExplainUnavailable, one_line
from tabserve.core.explain.treeshap import explain_numpy
from tabserve.core.manifest import Feature
from tabserve.training import import_model
from tabserve.training.explain_data import build_explain

shap = pytest.importorskip("shap")
ROWS = 40
BANDS = ["very low", "low", "lower", "below", "under", "middle", "over", "above", "higher", "high", "very high"]
NUMERIC = ["age", "bp", "s5"]  # 3 numbers + 11 one-hot columns: density 4/14 < 0.3, so the output is sparse


def diabetes_with_bands() -> tuple[pd.DataFrame, pd.Series]:
    frame = load_diabetes(as_frame=True).frame
    X = frame[NUMERIC].copy()
    X["bmi_band"] = pd.qcut(frame["bmi"], len(BANDS), labels=BANDS).astype(str)
    return X, frame["target"] / 100


def sparse_pipeline(model: Any) -> Pipeline:
    columns = ColumnTransformer([("num", "passthrough", NUMERIC), ("cat", OneHotEncoder(), ["bmi_band"])])
    return Pipeline([("columns", columns), ("model", model)])


def imported(pipeline: Any, X: pd.DataFrame, y: pd.Series, folder: Path) -> tabserve.Model:
    """The bundle ``tabserve import`` writes for a pickled ``pipeline`` and a CSV sample of ``X``."""
    folder.mkdir(parents=True, exist_ok=True)
    X.assign(target=y).to_csv(folder / "sample.csv", index=False)
    joblib.dump(pipeline, folder / "model.joblib")
    result = import_model(folder / "model.joblib", folder / "sample.csv", target="target", trust_pickle=True,
                          dest=folder / "bundle")
    return tabserve.load(result.path)


def shap_per_feature(tree_model: Any, cols: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """shap's values per estimator column, summed over each feature's columns: [rows, outputs, features]."""
    values = np.asarray(shap.TreeExplainer(tree_model).shap_values(cols, check_additivity=False))
    values = values[:, :, None] if values.ndim == 2 else values  # [rows, columns, outputs]
    return np.stack([values[:, g, :].sum(axis=1) for g in groups], axis=2)


@pytest.mark.parametrize("model", [
    GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0),
    RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0),
    GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0),
], ids=lambda m: type(m).__name__)
def test_a_sparse_one_hot_column_transformer_is_explained_as_shap_does(model: Any, tmp_path: Path) -> None:
    X, y = diabetes_with_bands()
    if isinstance(model, GradientBoostingClassifier):
        y = (y > y.median()).map({True: "high", False: "low"})
    pipeline = sparse_pipeline(model).fit(X, y)
    rows = X.iloc[:ROWS]
    cols = pipeline[:-1].transform(rows)
    assert sparse.issparse(cols) and cols.shape[1] == len(NUMERIC) + len(BANDS)  # the case of the issue

    served = imported(pipeline, X, y, tmp_path)
    explainer = Explainer.from_bundle(served.bundle)
    x = served.schema.records(rows.to_dict(orient="records"), max_rows=ROWS)
    got = explainer.explain(x)

    position = {name: i for i, name in enumerate(got.features)}
    groups = [[position[n]] for n in NUMERIC] + [[position["bmi_band"]]]
    assert sorted(got.features) == sorted([*NUMERIC, "bmi_band"])
    by_feature = [[0], [1], [2], list(range(3, 3 + len(BANDS)))]  # the estimator's columns of each feature
    expected = shap_per_feature(pipeline[-1], cols.toarray(), by_feature)
    mine = np.concatenate([got.contributions[:, :, g] for g in groups], axis=2)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(got.contributions.sum(axis=2) + got.expected_value, got.output, rtol=0, atol=1e-12)
    final = pipeline[-1]
    raw = final.decision_function(cols) if got.space == "margin" else final.predict(cols)
    np.testing.assert_allclose(got.output, np.asarray(raw).reshape(len(rows), -1), rtol=1e-12, atol=1e-12)


def _boosted_forest(data: str) -> tuple[Any, np.ndarray, str]:
    xgboost = pytest.importorskip("xgboost")
    common = {"n_estimators": 8, "num_parallel_tree": 3, "max_depth": 4, "subsample": 0.8,
              "colsample_bynode": 0.8, "random_state": 0}
    if data == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        return xgboost.XGBRegressor(**common).fit(X, y / 100), X, "regression"
    X, y = load_breast_cancer(return_X_y=True) if data == "binary" else load_iris(return_X_y=True)
    X = X[:, :8]
    return xgboost.XGBClassifier(**common).fit(X, y), X, "classification"


def _shap_float64(model: Any, n_outputs: int) -> Any:
    """shap's own (float64) TreeSHAP over shap's parse of the model (``shap.TreeExplainer(model)`` hands
    XGBoost models to XGBoost's float32 ``pred_contribs``). Each tree adds to its own class (``tree_info``):
    shap's parse of a multiclass boosted forest assigns tree i to class i % K instead."""
    booster = model.get_booster()
    tree_info = json.loads(booster.save_raw(raw_format="json"))["learner"]["gradient_booster"]["model"]["tree_info"]
    trees = []
    for t, k in zip(shap.TreeExplainer(model).model.trees, tree_info, strict=True):
        values = np.zeros((len(t.values), n_outputs))
        values[:, int(k)] = t.values[:, 0]
        trees.append({"children_left": t.children_left, "children_right": t.children_right,
                      "children_default": t.children_default, "features": t.features, "thresholds": t.thresholds.astype(np.float64),
                      "values": values, "node_sample_weight": t.node_sample_weight})
    return shap.TreeExplainer({"trees": trees})


@pytest.mark.parametrize("data", ["diabetes", "binary", "iris"])
def test_xgboost_boosted_random_forests_are_explained_exactly(data: str) -> None:
    model, X, task = _boosted_forest(data)
    features = [Feature(name=f"x{i}", dtype="float64") for i in range(X.shape[1])]
    built = build_explain(model, features, task, pd.DataFrame(X, columns=[f.name for f in features]))  # type: ignore[arg-type]
    assert built.data is not None and built.reason is None, built.reason
    from tabserve.core.explain.artifact import from_bytes

    explainer = Explainer(from_bytes(built.data), [f.name for f in features], "X")
    rows = X[:ROWS]
    got = explainer.explain(rows)
    k = got.contributions.shape[1]
    assert explainer.artifact.trees is not None and len(explainer.artifact.trees.roots) == 8 * 3 * (3 if k == 3 else 1)
    # float64 TreeSHAP on shap's own parse of the model: the same values to ~1e-15
    reference = _shap_float64(model, k)
    expected = np.asarray(reference.shap_values(rows.astype(np.float32).astype(np.float64), check_additivity=False))
    expected = (expected[:, :, None] if expected.ndim == 2 else expected).transpose(0, 2, 1)
    np.testing.assert_allclose(got.contributions, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # additivity, and the output is XGBoost's own margin (computed by XGBoost in float32)
    np.testing.assert_allclose(got.contributions.sum(axis=2) + got.expected_value, got.output, rtol=0, atol=1e-12)
    margin = np.asarray(model.predict(rows, output_margin=True), dtype=np.float64).reshape(len(rows), -1)
    np.testing.assert_allclose(got.output, margin, rtol=1e-6, atol=1e-6)
    # and shap.TreeExplainer on the model itself (XGBoost's float32 pred_contribs)
    direct = np.asarray(shap.TreeExplainer(model).shap_values(rows, check_additivity=False))
    direct = (direct[:, :, None] if direct.ndim == 2 else direct).transpose(0, 2, 1)
    np.testing.assert_allclose(got.contributions, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(explain_numpy(explainer.plan, rows)[0], got.contributions, rtol=0, atol=1e-12)


def test_a_family_without_an_explainer_says_why_in_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    X, y = diabetes_with_bands()
    X = X[NUMERIC]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the MLP's convergence warning
        pipeline = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(8,), max_iter=300,
                                                                random_state=0)).fit(X, y)
    X.assign(target=y).to_csv(tmp_path / "sample.csv", index=False)
    joblib.dump(pipeline, tmp_path / "model.joblib")
    argv = ["import", str(tmp_path / "model.joblib"), "--sample", str(tmp_path / "sample.csv"), "--target",
            "target", "--trust-pickle", "--out", str(tmp_path / "bundle")]
    assert main(argv) == 0
    served = tabserve.load(tmp_path / "bundle")
    np.testing.assert_allclose(served.predict(X.to_numpy()[:5]), pipeline.predict(X.iloc[:5]), rtol=1e-9)
    reason = served.bundle.manifest.training["explain_unavailable"]
    assert "\n" not in reason and reason.startswith("MLPRegressor has no TreeSHAP or linear explainer in "
                                                    "tabserve: it is a neural network; explained are decision trees")
    assert f"  note:     no explanations: {reason}\n" in capsys.readouterr().out  # tabserve import says so
    with pytest.raises(ExplainUnavailable) as caught:
        Explainer.from_bundle(served.bundle)
    assert str(caught.value) == f"model {served.name}:{served.version} cannot be explained: {reason}"


def test_a_reason_is_always_one_line() -> None:
    trace = "Check failed: end <= model.BoostedRounds() (30 vs. 10)\nStack trace:\n  [bt] (0) libxgboost.so"
    assert one_line(trace) == "Check failed: end <= model.BoostedRounds() (30 vs. 10)"
    assert one_line("\n\n  second line first  \nmore") == "second line first"
    long = one_line("x" * 1000, 50)
    assert len(long) == 50 and long.endswith(" ...")


@pytest.mark.parametrize("library,objective,data", [
    ("xgboost", "count:poisson", "diabetes"), ("xgboost", "reg:tweedie", "diabetes"),
    ("lightgbm", "poisson", "diabetes"), ("lightgbm", "gamma", "diabetes"), ("lightgbm", "multiclassova", "iris"),
])
def test_boosters_with_a_log_or_one_vs_rest_link_explain_their_margin(library: str, objective: str,
                                                                      data: str) -> None:
    """The margin is the trees' sum whatever the objective: explained as shap does (these objectives are not
    exported yet; the explanation does not wait for them)."""
    from tests.core.test_explain_models import _check

    module = pytest.importorskip(library)
    kind = "Classifier" if data == "iris" else "Regressor"
    extra = {"verbose": -1} if library == "lightgbm" else {}
    model = getattr(module, f"{'LGBM' if library == 'lightgbm' else 'XGB'}{kind}")(n_estimators=20,
                                                                                objective=objective, **extra)
    explainer = _check(model, data)
    assert explainer.artifact.space == "margin"
