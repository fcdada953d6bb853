"""Global importance and explanation data written by train and import: what the manifest records, per feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import tabserve
from tabserve.core.explain.artifact import from_bytes
from tabserve.core.explain.explainer import Explainer
from tabserve.core.manifest import Feature
from tabserve.core.schema import TabularBatch
from tabserve.training import train_file
from tabserve.training.explain_data import build_explain
from tabserve.training.importance import global_importance


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """y depends strongly on a, weakly on the colour, not at all on noise."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n)
    a, noise = rng.normal(size=n), rng.normal(size=n)
    y = 5 * a + np.where(colour == "red", 1.0, 0.0) + rng.normal(scale=0.1, size=n)
    return pd.DataFrame({"a": a, "colour": colour, "noise": noise, "y": y})


def test_trained_bundle_records_both_importances_ranked_by_what_matters(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False)
    result = train_file(path, "y", dest=tmp_path / "b", params={"n_estimators": 20})
    imp = result.manifest.importance
    assert imp is not None and imp.impurity is not None and imp.permutation is not None
    assert set(imp.impurity) == {"a", "colour", "noise"}  # the colour's one-hot columns summed into it
    assert sum(imp.impurity.values()) == pytest.approx(1.0)
    assert imp.impurity["a"] > imp.impurity["colour"] > 0
    assert imp.permutation["a"].mean > 1.0 > imp.permutation["noise"].mean
    assert imp.scoring == "r2" and imp.checked_on == "holdout" and imp.repeats == 5 and imp.rows == 60


def test_one_hot_columns_are_summed_into_their_feature() -> None:
    frame = _frame()
    X = frame[["a", "colour", "noise"]]
    pipeline = Pipeline([
        ("columns", ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["colour"]),
                                       ("num", StandardScaler(), ["a", "noise"])])),
        ("model", RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0))]).fit(X, frame["y"])
    features = [Feature(name="a", dtype="float64"), Feature(name="colour", dtype="str", kind="categorical",
                                                            categories=["blue", "green", "red"]),
                Feature(name="noise", dtype="float64")]
    built = build_explain(pipeline, features, "regression", X)
    assert built.data is not None and built.columns == [1, 1, 1, 0, 2]  # colour x3, then a, noise
    shap = pytest.importorskip("shap")
    explainer = Explainer(from_bytes(built.data), ["a", "colour", "noise"], "X", "X_cat")
    rows = X.iloc[:10]
    got = explainer.explain(TabularBatch(rows[["a", "noise"]].to_numpy(), rows[["colour"]].to_numpy(dtype=object)))
    per_column = shap.TreeExplainer(pipeline[-1]).shap_values(pipeline[:-1].transform(rows))
    expected = np.stack([per_column[:, 3], per_column[:, :3].sum(axis=1), per_column[:, 4]], axis=1)
    np.testing.assert_allclose(got.contributions[:, 0, :], expected, atol=1e-6)
    np.testing.assert_allclose(got.output[:, 0], pipeline.predict(rows), atol=1e-9)


def test_linear_models_have_permutation_but_no_impurity_importance() -> None:
    frame = _frame()
    X = frame[["a", "noise"]]
    model = Pipeline([("s", StandardScaler()), ("m", LinearRegression())]).fit(X.to_numpy(), frame["y"])
    features = [Feature(name="a", dtype="float64"), Feature(name="noise", dtype="float64")]
    found = global_importance(model, model[-1], features, [0, 1], X, frame["y"].to_numpy(), "regression", seed=0)
    assert found["impurity"] is None and "LinearRegression has no impurity-based importance" in found["notes"]
    assert found["permutation"]["a"]["mean"] > 1.0


def test_import_without_target_explains_but_notes_no_permutation(tmp_path: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    frame = _frame()
    X = frame[["a", "noise"]]
    booster = lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(X, frame["y"]), 20)
    booster.save_model(tmp_path / "model.txt")
    X.to_csv(tmp_path / "sample.csv", index=False)
    from tabserve.training.importer import import_model

    result = import_model(tmp_path / "model.txt", tmp_path / "sample.csv", dest=tmp_path / "bundle")
    m = result.manifest
    assert m.explain is not None and m.explain.space == "value" and m.explain.estimator == "NativeRegressor"
    assert m.importance is not None and m.importance.impurity is not None and m.importance.permutation is None
    assert "no permutation importance: the sample has no target column" in m.importance.notes
    explanation = Explainer.from_bundle(tabserve.load(result.path).bundle).explain(X.to_numpy()[:20])
    contrib = booster.predict(X.iloc[:20], pred_contrib=True)  # LightGBM's own TreeSHAP
    np.testing.assert_allclose(explanation.contributions[:, 0, :], contrib[:, :2], atol=1e-6)
    np.testing.assert_allclose(explanation.expected_value[0], contrib[0, 2], atol=1e-6)


def test_a_model_without_an_explainer_is_still_trained_and_says_why(tmp_path: Path) -> None:
    from sklearn.neighbors import KNeighborsRegressor

    frame = _frame()
    X = frame[["a", "noise"]]
    model = KNeighborsRegressor().fit(X.to_numpy(), frame["y"])
    built = build_explain(model, [Feature(name="a", dtype="float64"), Feature(name="noise", dtype="float64")],
                          "regression", X)
    assert built.data is None and built.manifest is None
    assert "KNeighborsRegressor has no TreeSHAP or linear explainer" in (built.reason or "")
