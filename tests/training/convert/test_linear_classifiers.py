"""Linear classifiers whose labels come from decision_function: identical labels, the decision output
within 1e-9 relative, SGDClassifier's probabilities (log_loss, modified_huber) within 1e-9; those without
predict_proba are served with labels only."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import (
    Perceptron,
    RidgeClassifier,
    RidgeClassifierCV,
    SGDClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import tabserve
from tabserve.errors import ExportError, InvalidInput
from tabserve.training import import_model
from tabserve.training.export import export_onnx

REL = 1e-9
TINY = np.finfo(np.float64).tiny
LOADERS = {"breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}


def _passive_aggressive():
    from sklearn.linear_model import PassiveAggressiveClassifier  # deprecated in 1.8, gone in 1.10

    return PassiveAggressiveClassifier(random_state=0)


CLASSIFIERS = {
    "sgd_hinge": lambda: SGDClassifier(random_state=0),
    "sgd_log_loss": lambda: SGDClassifier(loss="log_loss", random_state=0),
    "sgd_modified_huber": lambda: SGDClassifier(loss="modified_huber", random_state=0),
    "sgd_perceptron_loss": lambda: SGDClassifier(loss="perceptron", random_state=0),
    "ridge": lambda: RidgeClassifier(alpha=2.0),
    "ridge_cv": lambda: RidgeClassifierCV(),
    "linear_svc": lambda: LinearSVC(random_state=0),
    "perceptron": lambda: Perceptron(random_state=0),
    "passive_aggressive": _passive_aggressive,
}


def _fit(name: str, dataset: str, labels: np.ndarray | None = None):
    X, y = LOADERS[dataset](return_X_y=True)
    if labels is not None:
        y = labels[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence, and PassiveAggressive's deprecation
        model = make_pipeline(StandardScaler(), CLASSIFIERS[name]()).fit(X, y)
    # far from the data too: scores of +-100, probabilities at their clipping and underflow
    return model, np.vstack([X, X * 5, -X, X[:, ::-1]])


def _run(model, X: np.ndarray):
    exported = export_onnx(model, X.shape[1], "classification")
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return exported, dict(zip(names, session.run(None, {"X": X}), strict=True))


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), TINY)))


@pytest.mark.parametrize("dataset", list(LOADERS))
@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_labels_scores_and_probabilities_are_the_models(name, dataset):
    model, X = _fit(name, dataset)
    exported, out = _run(model, X)
    np.testing.assert_array_equal(out["label"], model.predict(X))
    if hasattr(model, "predict_proba"):
        assert [o["role"] for o in exported.outputs] == ["label", "probabilities"]
        assert _rel(out["probabilities"], model.predict_proba(X)) < REL
    else:
        assert [o["role"] for o in exported.outputs] == ["label"]  # the server answers labels only
        assert "probabilities" not in out
        assert _rel(out["decision"], model.decision_function(X)) < REL  # in model.onnx for other users


@pytest.mark.parametrize("name", ["ridge", "linear_svc", "sgd_modified_huber"])
def test_string_labels(name):
    model, X = _fit(name, "breast_cancer", np.array(["malignant", "benign"], dtype=object))
    _, out = _run(model, X)
    assert list(out["label"]) == list(model.predict(X))


def test_modified_huber_probabilities_reach_0_and_1_as_sklearn_clips():
    model, X = _fit("sgd_modified_huber", "breast_cancer")
    _, out = _run(model, X)
    assert {0.0, 1.0} <= set(out["probabilities"].ravel().tolist())
    assert _rel(out["probabilities"], model.predict_proba(X)) < REL  # the clipped ones exactly


def test_a_multilabel_ridge_classifier_is_refused():
    X, y = load_iris(return_X_y=True)
    model = RidgeClassifier().fit(X, np.stack([y == 0, y == 2], axis=1).astype(int))
    with pytest.raises(ExportError, match="multilabel"):
        export_onnx(model, 4, "classification")


def test_a_label_only_classifier_imported_and_served(tmp_path):
    """The user's path: a pickled pipeline imported, loaded, served over HTTP: labels, no probabilities."""
    data = load_wine(as_frame=True)
    frame = data.frame
    model = make_pipeline(StandardScaler(), LinearSVC(random_state=0)).fit(data.data, data.target)
    joblib.dump(model, tmp_path / "svc.joblib")
    frame.to_csv(tmp_path / "wine.csv", index=False)
    result = import_model(tmp_path / "svc.joblib", tmp_path / "wine.csv", target="target", trust_pickle=True,
                          dest=tmp_path / "b")
    assert [o.role for o in result.manifest.outputs] == ["label"]
    assert result.manifest.parity.label_mismatches == 0 and result.manifest.parity.passed
    served = tabserve.load(result.path)
    np.testing.assert_array_equal(served.predict(data.data.to_numpy()), model.predict(data.data))
    with pytest.raises(InvalidInput, match="labels only"):
        served.predict_proba(data.data.to_numpy())
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=served)
    with TestClient(app) as client:
        one = client.post("/api/v1/predict", json={"data": data.data.iloc[0].tolist()})
        batch = client.post("/api/v1/predict/batch", json={"data": data.data.head(5).to_numpy().tolist()})
        v2 = client.post(f"/v2/models/{result.manifest.name}/infer", json={"inputs": [
            {"name": "X", "shape": [5, 13], "datatype": "FP64", "data": data.data.head(5).to_numpy().ravel().tolist()}]})
        explained = client.post("/api/v1/explain", json={"data": data.data.iloc[0].tolist()})
    assert one.status_code == 200, one.text
    assert one.json()["prediction"] == model.predict(data.data.head(1))[0] and "probabilities" not in one.json()
    assert batch.status_code == 200, batch.text
    assert batch.json()["predictions"] == model.predict(data.data.head(5)).tolist()
    assert "probabilities" not in batch.json()
    assert v2.status_code == 200, v2.text
    assert [(o["name"], o["data"]) for o in v2.json()["outputs"]] == [("label", model.predict(data.data.head(5)).tolist())]
    assert explained.status_code == 200 and explained.json()["output_space"] == "margin"  # decision_function
