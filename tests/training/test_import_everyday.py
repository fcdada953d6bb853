"""Issue #16: everyday pipelines fitted on real data and imported as a user would (a trusted joblib file
and a CSV sample) now become bundles that reproduce them, explain where their columns stay traceable,
and answer over HTTP; a step that stays unsupported is refused before anything is written."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import (
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    TweedieRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    OrdinalEncoder,
    PolynomialFeatures,
    PowerTransformer,
    QuantileTransformer,
    SplineTransformer,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import LinearSVC

import tabserve
from tabserve.errors import ExportError
from tabserve.training import import_model

LOADERS = {"diabetes": load_diabetes, "breast_cancer": load_breast_cancer, "wine": load_wine}

# name -> (dataset, pipeline, explains)
PIPELINES = {
    "poisson": ("diabetes", lambda: make_pipeline(StandardScaler(), PoissonRegressor()), True),
    "spline-tweedie": ("diabetes", lambda: make_pipeline(SplineTransformer(n_knots=4), TweedieRegressor(power=1.5)),
                       True),
    "poly-ridge": ("diabetes", lambda: make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge()), False),
    "power-sgd": ("breast_cancer", lambda: make_pipeline(PowerTransformer(), SGDClassifier(loss="log_loss",
                                                                                          random_state=0)), True),
    "log1p-ridge_classifier": ("breast_cancer", lambda: make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                                                                      RidgeClassifier()), True),
    "kbest-kbins-logistic": ("breast_cancer", lambda: make_pipeline(
        SelectKBest(f_classif, k=10), KBinsDiscretizer(n_bins=4, quantile_method="averaged_inverted_cdf"),
        LogisticRegression(max_iter=2000)), True),
    "quantile-pca-svc": ("wine", lambda: make_pipeline(QuantileTransformer(n_quantiles=50), PCA(5),
                                                       LinearSVC(random_state=0)), False),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pd.DataFrame, str]]:
    folder = tmp_path_factory.mktemp("samples")
    out = {}
    for name, loader in LOADERS.items():
        frame = loader(as_frame=True).frame
        frame.to_csv(folder / f"{name}.csv", index=False)
        out[name] = (frame, str(folder / f"{name}.csv"))
    return out


@pytest.mark.parametrize("name", list(PIPELINES))
def test_everyday_pipelines_import_reproduce_and_explain(name, samples, tmp_path):
    dataset, factory, explains = PIPELINES[name]
    frame, sample = samples[dataset]
    X, y = frame.drop(columns="target"), frame["target"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = factory().fit(X, y)
    joblib.dump(pipeline, tmp_path / "model.joblib")

    result = import_model(tmp_path / "model.joblib", sample, target="target", trust_pickle=True, dest=tmp_path / "b")

    parity = result.manifest.parity
    assert parity.passed and parity.label_mismatches == 0 and parity.max_rel_diff <= 1e-9
    served = tabserve.load(result.path)
    expected = pipeline.predict(X)
    got = served.predict(X.to_numpy())
    if frame["target"].dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    else:
        np.testing.assert_array_equal(got, expected)
    assert (result.manifest.explain is not None) == explains


def test_text_features_through_ordinal_and_target_encoders_over_http(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"city": rng.choice(["Paris", "Lyon", "Nice"], n), "size": rng.choice(["S", "L"], n),
                          "x": rng.normal(size=n)})
    frame["target"] = np.where((frame.city == "Paris") ^ (frame.x > 0.3), "yes", "no")
    frame.to_csv(tmp_path / "sample.csv", index=False)
    X = frame.drop(columns="target")
    pipeline = make_pipeline(ColumnTransformer([
        ("city", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["city"]),
        ("size", TargetEncoder(random_state=0), ["size"])], remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=20, random_state=0)).fit(X, frame["target"])
    joblib.dump(pipeline, tmp_path / "model.joblib")
    result = import_model(tmp_path / "model.joblib", tmp_path / "sample.csv", target="target", trust_pickle=True,
                          dest=tmp_path / "b")
    assert result.manifest.parity.passed and result.manifest.parity.max_rel_diff <= 1e-9
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(result.path))
    records = X.head(20).to_dict(orient="records")
    with TestClient(app) as client:
        r = client.post("/api/v1/predict/batch", json={"records": records})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == pipeline.predict(X.head(20)).tolist()
    np.testing.assert_allclose(r.json()["probabilities"], pipeline.predict_proba(X.head(20)), rtol=1e-9, atol=0)


def test_a_step_that_stays_unsupported_is_refused_before_anything_is_written(samples, tmp_path):
    frame, sample = samples["diabetes"]
    X, y = frame.drop(columns="target"), frame["target"]
    pipeline = make_pipeline(QuantileTransformer(n_quantiles=50, output_distribution="normal"), Ridge()).fit(X, y)
    joblib.dump(pipeline, tmp_path / "model.joblib")
    with pytest.raises(ExportError, match="use output_distribution='uniform'"):
        import_model(tmp_path / "model.joblib", sample, target="target", trust_pickle=True, dest=tmp_path / "b")
    assert not (tmp_path / "b").exists()
