"""Issue #16: an IsolationForest, alone or after preprocessing, imported as a user would becomes an anomaly
bundle: label -1/1 identical to scikit-learn's predict, score (score_samples) and decision
(decision_function) within 1e-9 relative, parity recorded, answered on v1 single and batch and on v2;
explained in path-length space. Other anomaly detectors and contradicting options are refused."""

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
    assert manifest.explain is not None and manifest.explain.space == "path_length"

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


def _mean_path_length(model, rows):
    """score_samples = -2 ** -(mean path length / c(max_samples)), solved for the mean path length."""
    from sklearn.ensemble._iforest import _average_path_length

    forest = model[-1] if hasattr(model, "steps") else model
    return -np.log2(-model.score_samples(rows)) * _average_path_length([forest.max_samples_])[0]


@pytest.mark.parametrize("method", ["exact", "approximate"])
def test_anomaly_explanations_add_up_to_the_mean_path_length(method, cancer, tmp_path):
    """TreeSHAP over the trees' leaf depths: contributions + expected value = the row's mean path length,
    from which scikit-learn's score follows; a feature that shortens the path makes the row more abnormal."""
    frame, sample = cancer
    model = make_pipeline(StandardScaler(), IsolationForest(n_estimators=20, max_features=0.6, contamination=0.05,
                                                            random_state=0)).fit(frame)
    joblib.dump(model, tmp_path / "d.joblib")
    path = import_model(tmp_path / "d.joblib", sample, trust_pickle=True, dest=tmp_path / "b").path
    rows = frame.head(30)
    outlier = int(np.flatnonzero(model.predict(frame) == -1)[0])
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(path))
    with TestClient(app) as client:
        batch = client.post("/api/v1/explain", json={"data": rows.to_numpy().tolist(), "method": method})
        one = client.post("/api/v1/explain", json={"data": frame.iloc[outlier].tolist(), "top_k": 3})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["output_space"] == "path_length"
    explained = body["explanations"]
    assert [e["prediction"] for e in explained] == model.predict(rows).tolist()
    outputs = np.array([e["output"] for e in explained])
    np.testing.assert_allclose(outputs, _mean_path_length(model, rows), rtol=1e-9)
    sums = np.array([e["expected_value"] + sum(e["contributions"].values()) for e in explained])
    np.testing.assert_allclose(sums, outputs, rtol=0, atol=1e-9)
    assert one.status_code == 200 and one.json()["prediction"] == -1 and len(one.json()["contributions"]) == 3
    if method == "exact":  # shap's TreeExplainer explains an IsolationForest in the same space
        shap = pytest.importorskip("shap")
        theirs = shap.TreeExplainer(model[-1]).shap_values(model[0].transform(rows))
        ours = np.array([[e["contributions"][name] for name in frame.columns] for e in explained])
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert one.json()["output"] < one.json()["expected_value"]  # an outlier: a shorter path than the average


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
