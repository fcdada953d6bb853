"""CatBoost: values and probabilities to 1e-9 relative (measured: values ~1e-15, probabilities up to ~4e-13)
and identical labels on data, random, threshold and NaN rows (nan_mode Min and Max, depth 6 and 8);
.cbm files and trusted pickles imported and served; what cannot be exported refused with the reason."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import tabserve
from tabserve.cli import main
from tabserve.errors import ExportError
from tabserve.training import import_model
from tabserve.training.convert import FeatureSpec, export_exact

cb = pytest.importorskip("catboost")

QUIET = {"verbose": 0, "thread_count": 1, "random_seed": 0, "allow_writing_files": False}
REL = 1e-9


def labels_of(model):
    return lambda X: np.asarray(model.predict(X)).reshape(-1)  # CatBoost answers [N, 1] for several classes


@pytest.fixture(scope="module")
def wine():
    return load_wine(return_X_y=True)


@pytest.mark.parametrize("depth", [6, 8])
@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
def test_regression_with_missing_values(depth, nan_mode, diabetes, exact, with_nan):
    X = with_nan(diabetes.X)
    model = cb.CatBoostRegressor(iterations=60, depth=depth, nan_mode=nan_mode, **QUIET).fit(X, diabetes.y)
    exact(model, X, "regression")


@pytest.mark.parametrize("nan_mode", ["Min", "Max", "Forbidden"])
def test_missing_values_where_none_were_fitted(nan_mode, diabetes, exact, with_nan):
    """Features without NaN when fitted ('AsIs'): CatBoost's comparison with NaN is false, the bit clear."""
    model = cb.CatBoostRegressor(iterations=40, depth=6, nan_mode=nan_mode, **QUIET).fit(diabetes.X, diabetes.y)
    exact(model, with_nan(diabetes.X, fraction=0.3), "regression")


def test_the_best_iteration_kept_by_use_best_model(diabetes, exact):
    X, y = diabetes.X, diabetes.y
    model = cb.CatBoostRegressor(iterations=200, depth=4, learning_rate=0.3, use_best_model=True, **QUIET)
    model.fit(X[:300], y[:300], eval_set=(X[300:], y[300:]))
    assert model.tree_count_ < 200
    exact(model, X, "regression")


@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
def test_binary_with_text_labels(nan_mode, breast_cancer, exact, with_nan):
    X = with_nan(breast_cancer.X)
    y = np.array(["benign", "malignant"])[breast_cancer.y]
    model = cb.CatBoostClassifier(iterations=80, depth=6, nan_mode=nan_mode, **QUIET).fit(X, y)
    exact(model, X, "classification")


@pytest.mark.parametrize("depth", [6, 8])
def test_multiclass(depth, wine, iris, exact, with_nan):
    X = with_nan(wine[0])
    model = cb.CatBoostClassifier(iterations=50, depth=depth, nan_mode="Max", **QUIET).fit(X, wine[1])
    exact(model, X, "classification", predict=labels_of(model))
    model = cb.CatBoostClassifier(iterations=30, depth=4, **QUIET).fit(iris.X, iris.y)
    exact(model, iris.X, "classification", predict=labels_of(model))


@pytest.mark.parametrize("loss", ["Poisson", "Tweedie:variance_power=1.5", "Quantile:alpha=0.3", "MAE"])
def test_regression_losses(loss, diabetes, exact):
    """Poisson and Tweedie predict exp(raw); the others the raw value."""
    model = cb.CatBoostRegressor(iterations=40, depth=5, loss_function=loss, **QUIET).fit(diabetes.X, diabetes.y)
    exact(model, diabetes.X, "regression")


def test_scale_and_bias(diabetes, breast_cancer, exact):
    """A model whose scale and bias were set (``set_scale_and_bias``): raw = scale * sum + bias."""
    model = cb.CatBoostRegressor(iterations=30, depth=4, **QUIET).fit(diabetes.X, diabetes.y)
    model.set_scale_and_bias(0.75, 12.5)
    exact(model, diabetes.X, "regression")
    binary = cb.CatBoostClassifier(iterations=30, depth=4, **QUIET).fit(breast_cancer.X, breast_cancer.y)
    binary.set_scale_and_bias(1.5, -0.25)
    exact(binary, breast_cancer.X, "classification")


def test_a_plain_catboost_model(diabetes, exact):
    """``CatBoost`` itself (what a .cbm file loads as) predicts its raw value."""
    model = cb.CatBoost({"loss_function": "RMSE", "iterations": 20, "depth": 4, **QUIET}).fit(diabetes.X,
                                                                                              diabetes.y)
    exact(model, diabetes.X, "regression")


def _export(model, width: int, task: str = "regression"):
    return export_exact(model, [FeatureSpec(f"f{i}") for i in range(width)], task)


def test_categorical_features_are_refused_with_the_fix(diabetes):
    frame = pd.DataFrame(diabetes.X[:, :3], columns=["age", "sex", "bmi"])
    frame["city"] = np.where(diabetes.y > 150, "north", "south")  # few values: one-hot splits
    model = cb.CatBoostRegressor(iterations=5, depth=3, cat_features=["city"], **QUIET).fit(frame, diabetes.y)
    with pytest.raises(ExportError) as refused:
        _export(model, 4)
    message = str(refused.value)
    assert "CatBoost categorical features cannot be exported exactly: 'city'" in message
    assert "encode the column yourself (OneHotEncoder/OrdinalEncoder in a scikit-learn Pipeline before " \
           "CatBoost) or pass it as numbers" in message


@pytest.mark.parametrize(("make", "message"), [
    (lambda X, y: cb.CatBoostRegressor(iterations=3, grow_policy="Depthwise", **QUIET).fit(X, y),
     "grow_policy 'Depthwise' cannot be exported; only 'SymmetricTree'"),
    (lambda X, y: cb.CatBoostRegressor(iterations=3, loss_function="MultiRMSE", **QUIET).fit(X, np.c_[y, y]),
     "loss_function 'MultiRMSE' cannot be exported; supported: RMSE"),
    (lambda X, y: cb.CatBoostRegressor(iterations=3, loss_function="RMSEWithUncertainty", **QUIET).fit(X, y),
     "loss_function 'RMSEWithUncertainty' cannot be exported"),
    (lambda X, y: cb.CatBoostRanker(iterations=3, **QUIET).fit(X, y, group_id=np.arange(len(y)) // 10),
     "CatBoostRanker (a ranking model) cannot be exported"),
], ids=["depthwise", "multi_rmse", "uncertainty", "ranker"])
def test_unsupported_models_are_refused(make, message, diabetes):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _export(make(diabetes.X, diabetes.y), diabetes.X.shape[1])


# Import: .cbm files and pickles ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory: pytest.TempPathFactory):
    frame = load_diabetes(as_frame=True).frame
    path = tmp_path_factory.mktemp("catboost") / "diabetes.csv"
    frame.to_csv(path, index=False)
    return frame, path


def _same(actual, expected) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= REL * np.abs(expected))


def test_a_cbm_file_imported_by_the_cli_and_served(diabetes_csv, tmp_path, capsys):
    frame, csv = diabetes_csv
    X = frame.drop(columns="target")
    model = cb.CatBoostRegressor(iterations=40, depth=6, **QUIET).fit(X, frame["target"])
    model.save_model(str(tmp_path / "houses.cbm"))
    assert main(["import", str(tmp_path / "houses.cbm"), "--sample", str(csv), "--target", "target",
                 "--out", str(tmp_path / "bundle")]) == 0
    out = capsys.readouterr().out
    assert "catboost.CatBoost (objective RMSE)" in out and "(catboost-cbm)" in out
    bundle = tabserve.load(tmp_path / "bundle")
    assert bundle.manifest.feature_names == list(X.columns)  # the model's own names
    assert bundle.manifest.parity is not None and bundle.manifest.parity.max_rel_diff <= REL
    assert bundle.manifest.lineage.libraries["catboost"] == cb.__version__
    _same(bundle.predict(X.to_numpy()), model.predict(X))
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=bundle)
    with TestClient(app) as client:
        r = client.post("/api/v1/predict/batch", json={"records": X.head(5).to_dict(orient="records")})
    assert r.status_code == 200, r.text
    _same(r.json()["predictions"], model.predict(X.head(5)))


def test_classifiers_from_cbm_files_know_their_classes(tmp_path):
    cancer = load_breast_cancer(as_frame=True).frame
    cancer = cancer[[*cancer.columns[:6], "target"]]
    cancer["target"] = np.array(["malignant", "benign"])[cancer["target"]]
    cancer.to_csv(tmp_path / "cancer.csv", index=False)
    X = cancer.drop(columns="target")
    binary = cb.CatBoostClassifier(iterations=40, depth=5, **QUIET).fit(X, cancer["target"])
    binary.save_model(str(tmp_path / "cancer.cbm"))
    result = import_model(tmp_path / "cancer.cbm", tmp_path / "cancer.csv", target="target", dest=tmp_path / "b")
    assert result.manifest.classes == ["benign", "malignant"]
    served = tabserve.load(result.path)
    _same(served.predict_proba(X.to_numpy()), binary.predict_proba(X))
    assert served.predict(X.to_numpy()).tolist() == binary.predict(X).tolist()
    assert result.manifest.metrics["accuracy"] > 0.9

    wine = load_wine(as_frame=True).frame
    wine.to_csv(tmp_path / "wine.csv", index=False)
    Xw = wine.drop(columns="target")
    multi = cb.CatBoost({"loss_function": "MultiClass", "iterations": 30, "depth": 4, **QUIET}).fit(Xw, wine["target"])
    multi.save_model(str(tmp_path / "wine.cbm"))
    result = import_model(tmp_path / "wine.cbm", tmp_path / "wine.csv", target="target", dest=tmp_path / "w")
    assert result.manifest.classes == [0, 1, 2]
    served = tabserve.load(result.path)
    _same(served.predict_proba(Xw.to_numpy()), multi.predict(Xw, prediction_type="Probability"))
    assert served.predict(Xw.to_numpy()).tolist() == multi.predict(Xw, prediction_type="Class").reshape(-1).tolist()


@pytest.mark.parametrize("dump", [pickle.dump, joblib.dump], ids=["pickle", "joblib"])
def test_a_trusted_pickle(dump, diabetes_csv, tmp_path):
    frame, csv = diabetes_csv
    X = frame.drop(columns="target").to_numpy()  # fitted on an array: features known by position only
    model = cb.CatBoostRegressor(iterations=30, depth=6, nan_mode="Max", **QUIET).fit(X, frame["target"])
    with open(tmp_path / "m.pkl", "wb") as f:
        dump(model, f)
    result = import_model(tmp_path / "m.pkl", csv, target="target", trust_pickle=True, dest=tmp_path / "b")
    assert result.manifest.training["model"] == "catboost.CatBoostRegressor (objective RMSE)"
    rows = X[:20].copy()
    rows[::3, 2] = np.nan  # a missing value goes where the model sends it
    assert all(f.allow_missing for f in result.manifest.features)
    _same(tabserve.load(result.path).predict(rows), model.predict(rows))


def test_an_unsupported_pickle_says_what_and_never_takes_0_features(diabetes_csv, tmp_path):
    frame, csv = diabetes_csv
    X = frame.drop(columns="target")
    X = X.assign(sex=np.where(X["sex"] > 0, "m", "f"))
    model = cb.CatBoostRegressor(iterations=5, depth=3, cat_features=["sex"], **QUIET).fit(X, frame["target"])
    joblib.dump(model, tmp_path / "m.joblib")
    X.assign(target=frame["target"]).to_csv(tmp_path / "sample.csv", index=False)
    with pytest.raises(ExportError) as refused:
        import_model(tmp_path / "m.joblib", tmp_path / "sample.csv", target="target", trust_pickle=True,
                     dest=tmp_path / "b")
    assert "categorical features cannot be exported exactly: 'sex'" in str(refused.value)
    assert "takes 0 features" not in str(refused.value)
    assert not (tmp_path / "b").exists()

    ranker = cb.CatBoostRanker(iterations=3, **QUIET).fit(frame.drop(columns="target"), frame["target"],
                                                           group_id=np.arange(len(frame)) // 10)
    joblib.dump(ranker, tmp_path / "r.joblib")
    with pytest.raises(ExportError, match=r"CatBoostRanker \(a ranking model\) cannot be exported"):
        import_model(tmp_path / "r.joblib", csv, trust_pickle=True, dest=tmp_path / "r")
