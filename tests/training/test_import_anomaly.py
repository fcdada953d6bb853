"""Issue #16: an IsolationForest, alone or after preprocessing, imported as a user would becomes an anomaly
bundle: label -1/1 identical to scikit-learn's predict, score (score_samples) and decision
(decision_function) within 1e-9 relative, parity recorded, answered on v1 single and batch and on v2;
explanations refused with the reason. Other anomaly detectors and contradicting options are refused."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import SGDOneClassSVM
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import tabserve
from tabserve.errors import InvalidInput, ModelFileError
from tabserve.training import import_model

REL = 1e-9


def _rel(got: np.ndarray, expected: np.ndarray) -> float:
    return float((np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)).max())


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    path = tmp_path_factory.mktemp("sample") / "cancer.csv"
    frame.to_csv(path, index=False)
    return frame, str(path)


@pytest.mark.parametrize("make", [
    lambda: IsolationForest(n_estimators=40, contamination=0.05, random_state=0),
    lambda: make_pipeline(StandardScaler(), IsolationForest(n_estimators=30, max_features=0.5, random_state=0)),
], ids=["alone", "pipeline"])
def test_isolation_forest_imports_as_an_anomaly_bundle(make, cancer, tmp_path):
    frame, sample = cancer
    model = make().fit(frame)
    joblib.dump(model, tmp_path / "detector.joblib")

    result = import_model(tmp_path / "detector.joblib", sample, trust_pickle=True, dest=tmp_path / "b")

    manifest = result.manifest
    assert manifest.task == "anomaly"
    assert [(o.role, o.name, o.dtype) for o in manifest.outputs] == [
        ("label", "label", "int64"), ("score", "score", "float64"), ("decision", "decision", "float64")]
    assert manifest.parity.passed and manifest.parity.rows_checked > len(frame)  # adversarial rows too
    assert manifest.parity.max_rel_diff <= REL and manifest.parity.label_mismatches == 0
    assert manifest.explain is None and "anomal" in manifest.training["explain_unavailable"]

    served = tabserve.load(result.path)
    labels = served.predict(frame)
    np.testing.assert_array_equal(labels, model.predict(frame))
    assert set(np.unique(labels)) == {-1, 1}
    assert _rel(served.score_samples(frame), model.score_samples(frame)) <= REL
    assert _rel(served.decision_function(frame), model.decision_function(frame)) <= REL  # score - offset_
    with pytest.raises(InvalidInput, match="is an anomaly model; it has no class probabilities"):
        served.predict_proba(frame)


def test_anomaly_bundle_answers_v1_and_v2(cancer, tmp_path):
    frame, sample = cancer
    model = IsolationForest(n_estimators=30, contamination=0.1, random_state=0).fit(frame)
    joblib.dump(model, tmp_path / "detector.joblib")
    path = import_model(tmp_path / "detector.joblib", sample, trust_pickle=True, dest=tmp_path / "b").path
    rows = frame.head(40)
    labels, scores, decisions = model.predict(rows), model.score_samples(rows), model.decision_function(rows)
    outlier = int(np.flatnonzero(labels == -1)[0])
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(path))
    with TestClient(app) as client:
        single = client.post("/api/v1/predict", json={"data": rows.iloc[outlier].tolist()})
        batch = client.post("/api/v1/predict/batch", json={"data": rows.to_numpy().tolist()})
        v2 = client.post(f"/v2/models/{single.json()['model_name']}/infer", json={"inputs": [
            {"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.to_numpy().ravel().tolist()}]})
        meta = client.get(f"/v2/models/{single.json()['model_name']}")

    assert single.status_code == 200, single.text
    body = single.json()
    assert body["prediction"] == -1 and "probabilities" not in body
    assert _rel(np.array([body["score"]]), scores[outlier:outlier + 1]) <= REL
    assert body["decision"] < 0
    assert batch.status_code == 200, batch.text
    assert batch.json()["predictions"] == labels.tolist() and "classes" not in batch.json()
    assert _rel(np.array(batch.json()["scores"]), scores) <= REL
    assert _rel(np.array(batch.json()["decisions"]), decisions) <= REL
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert out["label"]["datatype"] == "INT64" and out["label"]["data"] == labels.tolist()
    assert out["score"]["shape"] == [40] and _rel(np.array(out["score"]["data"]), scores) <= REL
    assert _rel(np.array(out["decision"]["data"]), decisions) <= REL
    assert meta.json()["task"] == "anomaly"


def test_anomaly_explanations_are_refused_with_the_reason(cancer, tmp_path):
    frame, sample = cancer
    joblib.dump(IsolationForest(n_estimators=10, random_state=0).fit(frame), tmp_path / "d.joblib")
    path = import_model(tmp_path / "d.joblib", sample, trust_pickle=True, dest=tmp_path / "b").path
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(path))
    with TestClient(app) as client:
        r = client.post("/api/v1/explain", json={"data": frame.iloc[0].tolist()})
    assert r.status_code == 422, r.text
    assert "path length" in r.json()["detail"]


def test_isolation_forest_after_one_hot_text(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["Paris", "Lyon", "Nice"], 300), "x": rng.normal(size=300),
                          "y": rng.normal(size=300)})
    frame.to_csv(tmp_path / "sample.csv", index=False)
    model = make_pipeline(ColumnTransformer([("city", OneHotEncoder(), ["city"])], remainder="passthrough"),
                          IsolationForest(n_estimators=20, random_state=0)).fit(frame)
    joblib.dump(model, tmp_path / "d.joblib")
    result = import_model(tmp_path / "d.joblib", tmp_path / "sample.csv", trust_pickle=True, dest=tmp_path / "b")
    assert result.manifest.task == "anomaly" and result.manifest.parity.max_rel_diff <= REL
    served = tabserve.load(result.path)
    np.testing.assert_array_equal(served.predict(frame), model.predict(frame))


@pytest.mark.parametrize("options, message", [
    ({"task": "regression"}, "--task regression contradicts it"),
    ({"target": "mean radius"}, "an anomaly detector has no target"),
])
def test_contradicting_options_are_refused(options, message, cancer, tmp_path):
    frame, sample = cancer
    joblib.dump(IsolationForest(n_estimators=5, random_state=0).fit(frame.drop(columns="mean radius")
                                                                    if "target" in options else frame),
                tmp_path / "d.joblib")
    with pytest.raises(ModelFileError, match=message):
        import_model(tmp_path / "d.joblib", sample, trust_pickle=True, dest=tmp_path / "b", **options)
    assert not (tmp_path / "b").exists()


def test_another_anomaly_detector_is_refused_naming_isolation_forest(cancer, tmp_path):
    frame, sample = cancer
    joblib.dump(make_pipeline(StandardScaler(), SGDOneClassSVM(random_state=0)).fit(frame), tmp_path / "d.joblib")
    with pytest.raises(ModelFileError, match=r"anomaly detector \(SGDOneClassSVM\).*IsolationForest"):
        import_model(tmp_path / "d.joblib", sample, trust_pickle=True, dest=tmp_path / "b")
    assert not (tmp_path / "b").exists()
