"""``import_model``: LightGBM and XGBoost files and trusted pickles -> bundles that predict as the source model
(within 1e-9 relative), the sample matched to the model's features, and clear refusals."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor

import tabserve
from tabserve.errors import DataError, ModelFileError
from tabserve.training import import_model

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

REL = 1e-9
QUIET = {"verbose": -1, "num_threads": 1}


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.abs(actual - expected) <= REL * np.abs(expected))


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """diabetes (regression, 'target'), cancer (binary 0/1, 8 features whose names have spaces), iris (3
    classes 0/1/2)."""
    cancer = load_breast_cancer(as_frame=True).frame
    return {"diabetes": load_diabetes(as_frame=True).frame,
            "cancer": cancer[[*cancer.columns[:8], "target"]],
            "iris": load_iris(as_frame=True).frame}


@pytest.fixture(scope="module")
def samples(frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    paths["cancer.parquet"] = folder / "cancer.parquet"
    features(frames["cancer"]).to_parquet(paths["cancer.parquet"], index=False)  # no target
    return paths


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="target")


# LightGBM ------------------------------------------------------------------------------------------------


def test_lightgbm_regressor_text_file(frames, samples, tmp_path):
    frame = frames["diabetes"]
    booster = lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(features(frame), frame["target"]), 20)
    booster.save_model(tmp_path / "houses.txt")
    lines: list[str] = []
    result = import_model(tmp_path / "houses.txt", samples["diabetes"], target="target", home=tmp_path / "home",
                          progress=lines.append)
    assert result.path == tmp_path / "home" / "models" / "houses" / "1"
    model = tabserve.load(result.path)
    assert_same(model.predict(features(frame).to_numpy()), booster.predict(features(frame)))
    m = result.manifest
    assert m.task == "regression" and m.feature_names == list(features(frame).columns)
    digest = hashlib.sha256((tmp_path / "houses.txt").read_bytes()).hexdigest()
    assert {k: m.training[k] for k in ("imported_from", "format", "sha256")} == \
        {"imported_from": "houses.txt", "format": "lightgbm-text", "sha256": digest}
    assert {"r2", "rmse", "mae"} <= set(m.metrics) and m.target is not None and m.target.name == "target"
    assert m.parity is not None and m.parity.passed and m.parity.max_rel_diff <= REL
    age = m.features[0]
    exact = pd.read_csv(samples["diabetes"], float_precision="round_trip")  # each decimal as float() reads it
    assert age.stats is not None and age.stats.max == exact["age"].max()
    assert age.allow_missing  # a Booster sends a missing value down its default branches
    assert lines[0].startswith("[1/5] +") and "10 features named by the model and found in the sample" in "\n".join(lines)


def test_lightgbm_classifiers_with_generic_names_and_named_classes(frames, samples, tmp_path):
    iris = frames["iris"]
    booster = lgb.train({"objective": "multiclass", "num_class": 3, **QUIET},
                        lgb.Dataset(features(iris).to_numpy(), iris["target"]), 10)  # Column_0..Column_3
    booster.save_model(tmp_path / "iris.txt")
    lines: list[str] = []
    result = import_model(tmp_path / "iris.txt", samples["iris"], target="target", dest=tmp_path / "iris",
                          progress=lines.append)
    X = features(iris).to_numpy()
    model = tabserve.load(result.path)
    assert_same(model.predict_proba(X), booster.predict(X))
    np.testing.assert_array_equal(model.predict(X), np.argmax(booster.predict(X), axis=1))
    assert result.manifest.classes == [0, 1, 2] and result.manifest.metrics["accuracy"] > 0.9
    assert "the model does not name its features; taking the sample's 4 columns in order" in "\n".join(lines)

    cancer = frames["cancer"]
    binary = lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(features(cancer), cancer["target"]), 15)
    binary.save_model(tmp_path / "cancer.txt")
    result = import_model(tmp_path / "cancer.txt", samples["cancer.parquet"], classes=["malignant", "benign"],
                          dest=tmp_path / "cancer")
    model = tabserve.load(result.path)
    p = binary.predict(features(cancer))
    assert_same(model.predict_proba(features(cancer).to_numpy())[:, 1], p)
    labels = np.where(p > 0.5, "benign", "malignant")
    assert model.predict(features(cancer).to_numpy()).tolist() == labels.tolist()
    assert result.manifest.classes == ["malignant", "benign"] and result.manifest.metrics == {}
    assert result.manifest.feature_names[0] == "mean radius"  # LightGBM's own name is 'mean_radius'


# XGBoost -------------------------------------------------------------------------------------------------


def test_xgboost_regressor_json_file(frames, samples, tmp_path):
    frame = frames["diabetes"]
    booster = xgb.train({"objective": "reg:squarederror", "nthread": 1},
                        xgb.DMatrix(features(frame), frame["target"]), 20)
    booster.save_model(tmp_path / "model.json")
    frame[frame.columns[::-1]].to_csv(tmp_path / "reversed.csv", index=False)  # the model's order is kept
    lines: list[str] = []
    result = import_model(tmp_path / "model.json", tmp_path / "reversed.csv", target="target",
                          dest=tmp_path / "b", progress=lines.append)
    expected = booster.predict(xgb.DMatrix(features(frame)))
    assert_same(tabserve.load(result.path).predict(features(frame).to_numpy()), expected)
    assert result.manifest.feature_names == list(features(frame).columns)
    assert "found in the sample, in the model's order" in "\n".join(lines)
    assert result.manifest.training["format"] == "xgboost-json"


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_classifiers(suffix, frames, samples, tmp_path):
    cancer = frames["cancer"]
    X = features(cancer).to_numpy()
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, cancer["target"]), 15)
    booster.save_model(tmp_path / f"cancer{suffix}")
    result = import_model(tmp_path / f"cancer{suffix}", samples["cancer"], target="target", dest=tmp_path / "b")
    model = tabserve.load(result.path)
    p = booster.predict(xgb.DMatrix(X))
    assert_same(model.predict_proba(X)[:, 1], p)
    assert model.predict(X).tolist() == (p > 0.5).astype(int).tolist()
    assert result.manifest.training["format"] == ("xgboost-json" if suffix == ".json" else "xgboost-ubjson")
    assert {"accuracy", "f1", "roc_auc"} <= set(result.manifest.metrics)

    iris = frames["iris"]
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                        xgb.DMatrix(features(iris), iris["target"]), 10)
    booster.save_model(tmp_path / f"iris{suffix}")
    result = import_model(tmp_path / f"iris{suffix}", samples["iris"], target="target", dest=tmp_path / "i")
    assert_same(tabserve.load(result.path).predict_proba(features(iris).to_numpy()),
                booster.predict(xgb.DMatrix(features(iris))))


# Pickles -------------------------------------------------------------------------------------------------


class _Marker:
    """A pickle that creates a file when it is unpickled: proof of whether anything unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("name", ["model.pkl", "model.joblib", "model.bin"])
def test_a_pickle_is_refused_unless_trusted_and_never_unpickled(name, samples, tmp_path):
    marker = tmp_path / "unpickled"
    (tmp_path / name).write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ModelFileError, match="unpickling runs arbitrary code") as refused:
        import_model(tmp_path / name, samples["iris"], home=tmp_path / "home")
    assert "--trust-pickle" in str(refused.value)
    assert not marker.exists() and not (tmp_path / "home").exists()

    with pytest.raises(ModelFileError, match="holds a NoneType, not a fitted model"):
        import_model(tmp_path / name, samples["iris"], home=tmp_path / "home", trust_pickle=True)
    assert marker.exists()  # trusted: unpickled, and its code ran
    assert not (tmp_path / "home").exists()


def test_a_trusted_pipeline(frames, samples, tmp_path):
    cancer = frames["cancer"]
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0))
    pipeline.fit(features(cancer), cancer["target"])
    joblib.dump(pipeline, tmp_path / "pipeline.joblib")
    result = import_model(tmp_path / "pipeline.joblib", samples["cancer"], target="target", trust_pickle=True,
                          dest=tmp_path / "b")
    model = tabserve.load(result.path)
    assert_same(model.predict_proba(features(cancer).to_numpy()), pipeline.predict_proba(features(cancer)))
    m = result.manifest
    assert m.classes == [0, 1] and m.training["format"] == "pickle"
    assert m.training["model"] == "Pipeline(StandardScaler, RandomForestClassifier)"


def test_a_trusted_pipeline_keeps_its_encoders_categories(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["Brest", "Lyon", "Nice", "Paris"], 200), "rooms": rng.normal(3, 1, 200)})
    y = frame["rooms"] * 10 + (frame["city"] == "Paris") * 50
    columns = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                 ("rooms", StandardScaler(), ["rooms"])])
    pipeline = make_pipeline(columns, DecisionTreeRegressor(max_depth=4, random_state=0)).fit(frame, y)
    joblib.dump(pipeline, tmp_path / "rents.pkl")
    frame[frame["city"] != "Nice"].to_csv(tmp_path / "sample.csv", index=False)  # the sample lacks Nice
    result = import_model(tmp_path / "rents.pkl", tmp_path / "sample.csv", trust_pickle=True, dest=tmp_path / "b")
    city = result.manifest.features[0]
    assert (city.kind, city.categories, city.handle_unknown) == ("categorical", ["Brest", "Lyon", "Nice", "Paris"],
                                                                 "ignore")
    rows = [{"city": "Nice", "rooms": 2.0}, {"city": "Oslo", "rooms": 4.0}]
    assert_same(tabserve.load(result.path).predict(pd.DataFrame(rows)), pipeline.predict(pd.DataFrame(rows)))


# Refusals ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named_booster(frames: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = frames["diabetes"]
    path = tmp_path_factory.mktemp("models") / "named.txt"
    lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(features(frame), frame["target"]), 3).save_model(path)
    return path


def test_the_sample_must_match_the_models_features(frames, named_booster, tmp_path):
    frame = frames["diabetes"]
    frame.drop(columns=["bmi"]).to_csv(tmp_path / "lacks.csv", index=False)
    with pytest.raises(DataError, match=r"does not match the model's features: it lacks the model's feature\(s\) "
                                        r"'bmi' and has column\(s\) 'target' the model does not take \(if one of "
                                        r"them is the target, name it with --target\)"):
        import_model(named_booster, tmp_path / "lacks.csv", dest=tmp_path / "b")
    frame.rename(columns={"bmi": "BMI"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(DataError, match="lacks the model's feature\\(s\\) 'bmi' and has column\\(s\\) 'BMI'"):
        import_model(named_booster, tmp_path / "renamed.csv", target="target", dest=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_positional_features_must_be_as_many_as_the_models(frames, samples, tmp_path):
    iris = frames["iris"]
    path = tmp_path / "iris.json"
    xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(features(iris).to_numpy(), iris["target"]),
              2).save_model(path)
    with pytest.raises(DataError, match="the model takes 4 features, known only by position, but the sample "
                                        "iris.csv has 5 columns"):
        import_model(path, samples["iris"], dest=tmp_path / "b")


@pytest.mark.parametrize(("content", "message"), [
    (b"a,b,c\n1,2,3\n", "model.dat: unknown model format (it starts with b'a,b,c\\\\n1,2,3\\\\n')"),
    (b'{"trees": []}', "model.dat is JSON but not an XGBoost model"),
    (b"", "model.dat is empty"),
])
def test_unknown_formats(content, message, samples, tmp_path):
    (tmp_path / "model.dat").write_bytes(content)
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_model(tmp_path / "model.dat", samples["iris"], dest=tmp_path / "b")


def test_a_damaged_native_file(named_booster, samples, tmp_path):
    (tmp_path / "broken.txt").write_text(named_booster.read_text()[:200])
    with pytest.raises(ModelFileError, match="broken.txt cannot be read as a LightGBM text model"):
        import_model(tmp_path / "broken.txt", samples["diabetes"], dest=tmp_path / "b")


def test_classes_task_and_target_must_agree_with_the_model(frames, named_booster, samples, tmp_path):
    with pytest.raises(ModelFileError, match="objective 'regression', a regression objective; --task classification"):
        import_model(named_booster, samples["diabetes"], target="target", task="classification")
    with pytest.raises(ModelFileError, match="--classes is for classifiers"):
        import_model(named_booster, samples["diabetes"], target="target", classes=["a", "b"])
    cancer = frames["cancer"]
    path = tmp_path / "cancer.txt"
    lgb.train({"objective": "binary", **QUIET}, lgb.Dataset(features(cancer), cancer["target"]), 20).save_model(path)
    with pytest.raises(ModelFileError, match="the model has 2 classes .* give 2 distinct labels"):
        import_model(path, samples["cancer"], target="target", classes=["a", "b", "c"])
    labelled = cancer.assign(target=np.where(cancer["target"] == 1, "benign", "malignant"))
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    with pytest.raises(DataError, match="holds 'malignant' \\(row 0\\), but the model's classes are the numbers "
                                        "'0', '1'.* --classes benign,malignant"):
        import_model(path, tmp_path / "labelled.csv", target="target")
    result = import_model(path, tmp_path / "labelled.csv", target="target", classes=["malignant", "benign"],
                          dest=tmp_path / "b")
    assert result.manifest.metrics["accuracy"] > 0.9


def test_the_bundle_answers_http_predictions(frames, samples, tmp_path):
    frame = frames["diabetes"]
    booster = lgb.train({"objective": "regression", **QUIET}, lgb.Dataset(features(frame), frame["target"]), 10)
    booster.save_model(tmp_path / "m.txt")
    result = import_model(tmp_path / "m.txt", samples["diabetes"], target="target", dest=tmp_path / "b")
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(result.path))
    records = features(frame).head(3).to_dict(orient="records")
    with TestClient(app) as client:
        r = client.post("/api/v1/predict/batch", json={"records": records})
        one = client.post("/api/v1/predict", json={"data": features(frame).iloc[0].tolist()})
    assert r.status_code == 200, r.text
    assert_same(np.array(r.json()["predictions"]), booster.predict(features(frame).head(3)))
    assert one.status_code == 200 and one.json()["prediction"] == pytest.approx(r.json()["predictions"][0],
                                                                              rel=REL, abs=0)
