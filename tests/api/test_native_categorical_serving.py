"""Native categorical features over HTTP: models fitted on pandas ``category`` columns (HistGradientBoosting
"from_dtype", LightGBM, XGBoost; pickled and native files), imported, served; a client sends the text
("female", "high"), null for a missing value, and gets what the model says for a DataFrame with that
category (1e-9 relative)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from packaging.version import Version
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor

import tabserve
from tabserve.errors import DataError, ExportError
from tabserve.training.convert.xgboost import XGBOOST_CATEGORIES_SINCE
from tabserve.training.importer import ImportResult, import_model

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

# XGBoost saves a DataFrame's categories in its model since 3.1: before, its text columns cannot be imported
XGBOOST_NAMES = Version(xgb.__version__) >= Version(XGBOOST_CATEGORIES_SINCE)
NO_XGBOOST_NAMES = (f"XGBoost {xgb.__version__} does not save a DataFrame's categories in its model (XGBoost >= "
                    f"{XGBOOST_CATEGORIES_SINCE} does): its text categories cannot be imported")

BANDS = ["very low", "low", "middle", "high", "very high"]
CATEGORICAL = ["sex", "bp_band"]


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_diabetes(as_frame=True).frame
    frame = data.drop(columns=["target", "sex", "bp"])
    rng = np.random.default_rng(4)
    sex = np.where(data["sex"] > 0, "male", "female").astype(object)
    sex[rng.random(len(sex)) < 0.1] = None
    edges = np.quantile(data["bp"], [0.2, 0.4, 0.6, 0.8])
    bands = np.array(BANDS, dtype=object)[np.digitize(data["bp"], edges)]
    bands[rng.random(len(bands)) < 0.1] = None
    frame["sex"] = pd.Categorical(sex, categories=["female", "male"])
    frame["bp_band"] = pd.Categorical(bands, categories=BANDS)
    return frame, data["target"].to_numpy()


MODELS = {
    "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(max_iter=30, categorical_features="from_dtype",
                                                                    random_state=0),
    "lightgbm": lambda: lgb.LGBMRegressor(n_estimators=30, min_data_per_group=5, cat_smooth=1, verbose=-1,
                                          n_jobs=1),
    "xgboost": lambda: xgb.XGBRegressor(n_estimators=30, enable_categorical=True, max_cat_to_onehot=1, n_jobs=1),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, ImportResult]]:
    """Each model fitted on the frame, saved (a pickle; LightGBM also its native text file), imported with
    the frame as a CSV sample (missing categories as empty fields)."""
    tmp = tmp_path_factory.mktemp("native_categorical")
    frame, y = _frame()
    frame.to_csv(tmp / "sample.csv", index=False)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, make in MODELS.items():
            if name == "xgboost" and not XGBOOST_NAMES:  # refused: test_old_xgboost_text_is_refused
                continue
            model = make().fit(frame, y)
            joblib.dump(model, tmp / f"{name}.pkl")
            out[name] = (model, import_model(tmp / f"{name}.pkl", tmp / "sample.csv", trust_pickle=True,
                                             dest=tmp / name))
            if name == "lightgbm":
                model.booster_.save_model(tmp / "lightgbm.txt")
                out["lightgbm_file"] = (model, import_model(tmp / "lightgbm.txt", tmp / "sample.csv",
                                                            dest=tmp / "lightgbm_file"))
            if name == "xgboost":
                model.save_model(tmp / "xgboost.json")
                out["xgboost_file"] = (model, import_model(tmp / "xgboost.json", tmp / "sample.csv",
                                                           dest=tmp / "xgboost_file"))
    return out


def _get(imported: dict[str, tuple[Any, ImportResult]], name: str) -> tuple[Any, ImportResult]:
    if name not in imported and name.startswith("xgboost"):
        pytest.skip(NO_XGBOOST_NAMES)
    return imported[name]


@pytest.fixture
def serve(make_client) -> Iterator[Any]:
    clients = []

    def start(path: Path) -> TestClient:
        context = make_client(tabserve.load(path))
        clients.append(context)
        return context.__enter__()

    yield start
    for context in clients:
        context.__exit__(None, None, None)


def _records(unseen: bool) -> list[dict[str, Any]]:
    frame, _ = _frame()
    base = frame.drop(columns=CATEGORICAL).iloc[:14].to_dict("records")
    sexes = ["female", "male", None, ""] + (["unknown"] if unseen else [])
    bands = [*BANDS, None] + (["off the scale"] if unseen else [])
    return [{**row, "sex": sexes[i % len(sexes)], "bp_band": bands[i % len(bands)]} for i, row in enumerate(base)]


def _python(model: Any, records: list[dict[str, Any]]) -> np.ndarray:
    """The model on a DataFrame whose category columns hold the sent text (null or "" missing; an unseen
    value as one more category of the column's dtype)."""
    frame = pd.DataFrame(records)
    original, _ = _frame()
    for column in CATEGORICAL:
        values = [None if v in (None, "") else v for v in frame[column]]
        extra = sorted({v for v in values if v is not None} - set(original[column].cat.categories))
        frame[column] = pd.Categorical(values, categories=[*original[column].cat.categories, *extra])
    return model.predict(frame[list(original.columns)])


def test_the_manifest_lists_categories_in_the_models_code_order(imported):
    for name, (_, result) in imported.items():
        features = {f.name: f for f in result.manifest.features}
        sex, band = features["sex"], features["bp_band"]
        assert (sex.kind, sex.dtype, sex.allow_missing) == ("categorical", "str", True)
        expected = sorted(BANDS) if name == "hist_gradient_boosting" else BANDS  # sklearn's codes: sorted
        assert band.categories == expected
        assert band.handle_unknown == ("error" if name.startswith("xgboost") else "ignore")
        parity = result.manifest.parity
        assert parity.passed and parity.max_rel_diff <= 1e-9 and parity.adversarial_rows > 0


@pytest.mark.parametrize("name", ["hist_gradient_boosting", "lightgbm", "lightgbm_file", "xgboost", "xgboost_file"])
def test_text_null_and_unseen_categories_answer_as_the_dataframe(serve, imported, name):
    model, result = _get(imported, name)
    client = serve(result.path)
    records = _records(unseen=not name.startswith("xgboost"))
    r = client.post("/api/v1/predict/batch", json={"records": records})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], _python(model, records), rtol=1e-9, atol=0)
    one = client.post("/api/v1/predict", json={"data": [records[2][n] for n in result.manifest.feature_names]})
    assert one.status_code == 200, one.text
    assert one.json()["prediction"] == pytest.approx(_python(model, records[2:3])[0], rel=1e-9, abs=0)


def test_a_missing_category_differs_from_a_known_one(serve, imported):
    """null takes the model's missing-value branch: not an error, and not silently one of the categories."""
    model, result = imported["lightgbm"]
    client = serve(result.path)
    rows = [dict(_records(unseen=False)[0], sex=s) for s in ("female", "male", None)]
    answers = client.post("/api/v1/predict/batch", json={"records": rows}).json()["predictions"]
    np.testing.assert_allclose(answers, _python(model, rows), rtol=1e-9, atol=0)


def test_xgboost_refuses_an_unseen_category_with_a_422(serve, imported):
    _, result = _get(imported, "xgboost")
    client = serve(result.path)
    row = dict(_records(unseen=False)[0], bp_band="off the scale")
    r = client.post("/api/v1/predict/batch", json={"records": [_records(unseen=False)[1], row]})
    assert r.status_code == 422
    body = r.json()
    assert body["feature"] == "bp_band" and body["row"] == 1
    assert "unknown category 'off the scale'" in body["detail"]


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_explanations_say_categorical_splits_are_not_explained(serve, imported, name):
    """Explanations do not cover categorical splits yet: a 422 that says so (not a failure to read the model)."""
    _, result = _get(imported, name)
    r = serve(result.path).post("/api/v1/explain", json={"records": _records(unseen=False)[:1]})
    assert r.status_code == 422
    assert "categorical splits cannot be explained" in r.json()["detail"]


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_tabserve_predict_reads_an_empty_field_as_a_missing_category(imported, name, tmp_path):
    """Batch scoring a CSV (``tabserve predict``): empty categorical fields score as null does over HTTP."""
    from tabserve.batch.run import score_file

    model, result = _get(imported, name)
    records = _records(unseen=False)
    pd.DataFrame(records).to_csv(tmp_path / "rows.csv", index=False)
    score_file(tabserve.load(result.path), tmp_path / "rows.csv", tmp_path / "out.csv", progress=False)
    scored = pd.read_csv(tmp_path / "out.csv")["prediction"]
    np.testing.assert_allclose(scored, _python(model, records), rtol=1e-9, atol=0)


@pytest.mark.skipif(XGBOOST_NAMES, reason=f"XGBoost >= {XGBOOST_CATEGORIES_SINCE} saves its categories")
@pytest.mark.parametrize(("file", "error", "message"), [
    ("xgboost.pkl", ExportError, f"XGBoost before {XGBOOST_CATEGORIES_SINCE} does not save"),
    ("xgboost.json", DataError, "'sex' .* holds text .* takes numbers only")])  # a native file: numbers only
def test_old_xgboost_text_is_refused(tmp_path, file, error, message):
    """An XGBoost that does not save categories: the import of text refuses (the scikit-learn model naming the
    version that saves them) and writes nothing; it never serves text mapped to codes the model may read
    otherwise."""
    frame, y = _frame()
    frame.to_csv(tmp_path / "sample.csv", index=False)
    model = MODELS["xgboost"]().fit(frame, y)
    joblib.dump(model, tmp_path / "xgboost.pkl")
    model.save_model(tmp_path / "xgboost.json")
    with pytest.raises(error, match=message):
        import_model(tmp_path / file, tmp_path / "sample.csv", trust_pickle=True, dest=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
