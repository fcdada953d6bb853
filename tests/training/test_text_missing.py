"""Missing text values: a text feature takes null where its pipeline handles it (a SimpleImputer, an encoder with a
missing category), from `tabserve train` and `tabserve import` to every way of serving; the answer is scikit-learn's
on the same rows with NaN."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from palmerpenguins import load_penguins
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import tabserve
from tabserve.errors import DataError, ExportError
from tabserve.training import import_model, train_file
from tabserve.training.estimators import MISSING_TEXT_CATEGORY
from tabserve.training.options import ESTIMATORS
from tests.training.convert.run_onnx import transform_onnx

REL = 1e-9
TEXT = ["island", "sex"]
NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
FEATURES = ["island", *NUMBERS[:4], "sex", "year"]  # the file's order
# Small models: the point is the missing values, not the fit (defaults take ~1 min on 2 cores for HistGB).
_PARAMS = {"random_forest": {"n_estimators": 15}, "extra_trees": {"n_estimators": 15},
           "gradient_boosting": {"n_estimators": 20}, "hist_gradient_boosting": {"max_iter": 15}}


@pytest.fixture(scope="module")
def penguins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The raw palmerpenguins file: NaN in 4 numeric columns (2 rows) and in 'sex' (11 rows)."""
    frame = load_penguins()
    path = tmp_path_factory.mktemp("penguins") / "penguins.csv"
    frame.to_csv(path, index=False)
    return path, pd.read_csv(path)


def _rows() -> pd.DataFrame:
    """Rows as pandas reads them from a file: missing text, missing numbers, both on one row."""
    return pd.DataFrame({
        "island": ["Biscoe", "Dream", "Torgersen", np.nan, "Biscoe", np.nan, "Dream"],
        "bill_length_mm": [39.1, 46.5, np.nan, 50.0, 45.2, np.nan, 38.0],
        "bill_depth_mm": [18.7, 17.9, 18.0, np.nan, 14.8, 15.0, 19.0],
        "flipper_length_mm": [181.0, 192.0, 195.0, 210.0, np.nan, 220.0, 185.0],
        "body_mass_g": [3750.0, 3500.0, 3600.0, 5000.0, 5200.0, np.nan, 3400.0],
        "sex": [np.nan, "female", np.nan, "male", np.nan, np.nan, "male"],
        "year": [2007, 2008, 2009, 2007, 2008, 2009, 2007],
    }, columns=FEATURES).astype({"island": object, "sex": object})


def _json(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and np.isnan(v) else v


@contextmanager
def _client(bundle: Path) -> Iterator[TestClient]:
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(bundle))
    with TestClient(app) as client:
        yield client


def _served(bundle: Path, manifest: Any, rows: pd.DataFrame) -> dict[str, list[Any]]:
    """Each way of sending ``rows``: v1 data with null, v1 records with null, v1 records without the keys of
    missing text values, v2 model tensors with BYTES null, v2 one tensor per feature."""
    names = manifest.feature_names
    data = [[_json(v) for v in row] for row in rows[names].itertuples(index=False)]
    records = [dict(zip(names, r, strict=True)) for r in data]
    text = {f.name for f in manifest.features if f.kind == "categorical"}
    absent = [{k: v for k, v in r.items() if not (k in text and v is None)} for r in records]
    out: dict[str, list[Any]] = {}
    with _client(bundle) as client:
        for how, body in (("data", {"data": data}), ("records", {"records": records}),
                          ("absent keys", {"records": absent})):
            r = client.post("/api/v1/predict/batch", json=body)
            assert r.status_code == 200, (how, r.text)
            out[how] = r.json()["predictions"]
        one = client.post("/api/v1/predict", json={"data": data[0]})
        assert one.status_code == 200, one.text
        out["one row"] = [one.json()["prediction"]]
        numeric = [n for n in names if n not in text]
        tensors = [{"name": manifest.input.name, "shape": [len(rows), len(numeric)], "datatype": "FP64",
                    "data": [[r[names.index(n)] for n in numeric] for r in data]},
                   {"name": manifest.categorical_input.name, "shape": [len(rows), len(text)], "datatype": "BYTES",
                    "data": [[r[names.index(n)] for n in names if n in text] for r in data]}]
        per_feature = [{"name": n, "shape": [len(rows)], "datatype": "BYTES" if n in text else "FP64",
                        "data": [r[j] for r in data]} for j, n in enumerate(names)]
        for how, inputs in (("v2 tensors", tensors), ("v2 per feature", per_feature)):
            r = client.post(f"/v2/models/{manifest.name}/infer", json={"inputs": inputs})
            assert r.status_code == 200, (how, r.text)
            out[how] = r.json()["outputs"][0]["data"]
    return out


def _predicted(cli: Any, bundle: Path, rows: pd.DataFrame, folder: Path) -> list[Any]:
    """`tabserve predict` on a CSV with empty cells and on a Parquet file with nulls: its labels."""
    labels = []
    for name in ("rows.csv", "rows.parquet"):
        src, out = folder / name, folder / f"scored-{name}"
        rows.to_csv(src, index=False) if name.endswith(".csv") else rows.to_parquet(src, index=False)
        assert cli("predict", src, "-o", out, "--model", bundle, "--no-progress", "--keep", "") == 0
        scored = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        labels.append(scored["prediction"].tolist())
    assert labels[0] == labels[1]
    return labels[0]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_trains_on_the_raw_penguins_file(estimator, penguins, tmp_path, cli):
    path, _ = penguins
    result = train_file(path, "species", estimator=estimator, dest=tmp_path / "b", params=_PARAMS.get(estimator))
    m = result.manifest
    assert m.training["missing_text"] == MISSING_TEXT_CATEGORY
    by_name = {f.name: f for f in m.features}
    assert by_name["sex"].allow_missing and by_name["sex"].categories == ["female", "male"]
    assert not by_name["island"].allow_missing  # never missing in training: a null there is refused
    assert m.parity is not None and m.parity.passed and m.parity.label_mismatches == 0
    assert m.parity.max_rel_diff <= REL
    assert m.parity.probes["categories"] == 3 + 2 + 1  # islands, sexes, and a missing sex
    assert m.parity.adversarial_rows > 0

    rows = _rows()
    rows.loc[3, "island"] = rows.loc[5, "island"] = "Dream"  # island takes no missing value
    if estimator in ("linear", "gradient_boosting"):  # numbers imputed, so the NaN rows are kept
        assert m.training["missing"]
    else:
        assert "missing" not in m.training
    keep = [i for i in range(len(rows)) if all(by_name[n].allow_missing or not pd.isna(rows.loc[i, n])
                                                for n in NUMBERS)]
    rows = rows.iloc[keep].reset_index(drop=True)
    expected = result.pipeline.predict(rows).tolist()
    assert any(pd.isna(rows["sex"]))
    for how, labels in _served(result.path, m, rows).items():
        assert labels == expected[:len(labels)], how
    assert _predicted(cli, result.path, rows, tmp_path) == expected
    proba = tabserve.load(result.path).predict_proba(rows[m.feature_names].assign(
        sex=rows["sex"].fillna("")))  # the model input: "" for a missing text value
    np.testing.assert_allclose(proba, result.pipeline.predict_proba(rows), rtol=REL, atol=1e-12)


def test_a_null_where_the_model_takes_none_is_refused(penguins, tmp_path, cli, capsys):
    path, _ = penguins
    result = train_file(path, "species", estimator="decision_tree", dest=tmp_path / "b")
    rows = _rows().iloc[[3]]  # a missing island
    record = {n: _json(v) for n, v in zip(FEATURES, rows.iloc[0], strict=True)}
    with _client(result.path) as client:
        for body in ({"records": [record]}, {"records": [{k: v for k, v in record.items() if k != "island"}]}):
            r = client.post("/api/v1/predict/batch", json=body)
            assert r.status_code == 422, r.text
            assert r.json()["feature"] == "island"
        assert "'island' (column 0): the value is null; this categorical feature needs a value" in r.text or \
            "missing feature(s) 'island'" in r.text
        v2 = client.post("/v2/models/penguins/infer", json={"inputs": [
            {"name": n, "shape": [1], "datatype": "BYTES" if n in TEXT else "FP64", "data": [record[n]]}
            for n in FEATURES]})
        assert v2.status_code == 400 and "feature 'island'" in v2.json()["error"]
        assert "needs a value" in v2.json()["error"]
    capsys.readouterr()
    for name in ("rows.csv", "rows.parquet"):  # an empty field, a null
        src = tmp_path / name
        rows.to_csv(src, index=False) if name.endswith(".csv") else rows.to_parquet(src, index=False)
        assert cli("predict", src, "-o", tmp_path / f"out-{name}", "--model", result.path, "--no-progress") == 2
        err = capsys.readouterr().err
        assert "row 0" in err and "column 'island': the value is missing" in err and "needs a value" in err


# The text features that take a missing value: an imputer fills any; an encoder without a missing category
# takes one as unknown only where the sample held some ('sex'), so that a forgotten 'island' is a 422.
_TAKES_MISSING = {"most_frequent + one-hot": set(TEXT), "constant + one-hot ignoring the unknown": set(TEXT),
                  "one-hot with NaN as a category": {"sex"}, "ordinal with encoded_missing_value": {"sex"}}


def _imported_cases() -> dict[str, Any]:
    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    return {
        "most_frequent + one-hot": ColumnTransformer([
            ("text", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), TEXT),
            ("numbers", numbers, NUMBERS)]),
        "constant + one-hot ignoring the unknown": ColumnTransformer([
            ("text", make_pipeline(SimpleImputer(strategy="constant", fill_value="unknown"),
                                   OneHotEncoder(handle_unknown="ignore")), TEXT),
            ("numbers", numbers, NUMBERS)]),
        "one-hot with NaN as a category": ColumnTransformer([
            ("text", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20), TEXT),
            ("numbers", numbers, NUMBERS)]),
        "ordinal with encoded_missing_value": ColumnTransformer([
            ("text", OrdinalEncoder(encoded_missing_value=-1, handle_unknown="use_encoded_value",
                                    unknown_value=-2), TEXT),
            ("numbers", numbers, NUMBERS)]),
    }


@pytest.mark.parametrize("case", list(_imported_cases()))
@pytest.mark.parametrize("final", ["logistic", "forest"])
def test_imported_pipelines_take_missing_text_as_python_does(case, final, penguins, tmp_path, cli):
    path, frame = penguins
    estimator = (LogisticRegression(max_iter=2000) if final == "logistic"
                 else RandomForestClassifier(n_estimators=15, random_state=0))
    model = make_pipeline(_imported_cases()[case], estimator).fit(frame[FEATURES], frame["species"])
    (pickled := tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    result = import_model(pickled, path, target="species", trust_pickle=True, dest=tmp_path / "b")
    m = result.manifest
    assert {f.name for f in m.features if f.kind == "categorical" and f.allow_missing} == _TAKES_MISSING[case]
    assert m.parity is not None and m.parity.passed and m.parity.max_rel_diff <= REL
    assert m.parity.label_mismatches == 0
    rows = _rows()
    if "island" not in _TAKES_MISSING[case]:
        rows["island"] = rows["island"].fillna("Dream")
    expected = model.predict(rows).tolist()
    for how, labels in _served(result.path, m, rows).items():
        assert labels == expected[:len(labels)], how
    assert _predicted(cli, result.path, rows, tmp_path) == expected


def test_a_model_that_refuses_missing_text(penguins, tmp_path):
    path, frame = penguins
    full = frame.dropna(subset=["sex"])
    model = make_pipeline(ColumnTransformer([("text", OneHotEncoder(), TEXT),
                                             ("numbers", SimpleImputer(), NUMBERS)]),
                          HistGradientBoostingClassifier(max_iter=10)).fit(full[FEATURES], full["species"])
    (pickled := tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    with pytest.raises(DataError, match="feature column\\(s\\) 'sex' in the sample penguins.csv hold missing "
                                        "values, but the model does not take them there"):
        import_model(pickled, path, target="species", trust_pickle=True, dest=tmp_path / "b")
    full.to_csv(clean := tmp_path / "clean.csv", index=False)
    result = import_model(pickled, clean, target="species", trust_pickle=True, dest=tmp_path / "ok")
    assert not any(f.allow_missing for f in result.manifest.features if f.kind == "categorical")
    record = {n: _json(v) for n, v in zip(FEATURES, _rows().iloc[0], strict=True)}  # sex is null
    with _client(result.path) as client:
        r = client.post("/api/v1/predict/batch", json={"records": [record]})
    assert r.status_code == 422 and r.json()["feature"] == "sex"
    assert "the value is null; this categorical feature needs a value" in r.json()["detail"]


@pytest.mark.parametrize("marker", [np.nan, ""])
def test_a_string_imputer_exports_exactly(marker, penguins):
    _, frame = penguins
    text = frame[TEXT].astype(object)
    if marker == "":
        text = text.fillna("")
    encoder = make_pipeline(SimpleImputer(strategy="most_frequent", missing_values=marker),
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False)).fit(text)
    probe = pd.DataFrame({"island": ["Dream", "", "Mars"], "sex": ["", "male", ""]}, dtype=object)
    # The model input holds a missing value as "": scikit-learn gets NaN there, unless "" is its marker
    as_sklearn = probe if marker == "" else probe.replace({"": np.nan})
    np.testing.assert_array_equal(transform_onnx(encoder, probe), encoder.transform(as_sklearn))


def test_an_encoder_that_knows_both_missing_and_the_empty_string_is_refused():
    text = pd.DataFrame({"sex": ["male", "", np.nan, "female"]}, dtype=object)
    encoder = OneHotEncoder().fit(text)
    with pytest.raises(ExportError, match="knows both a missing value and the empty string"):
        transform_onnx(encoder, text.fillna(""))


def test_explanations_take_missing_text_too(penguins, tmp_path):
    path, _ = penguins
    result = train_file(path, "species", estimator="linear", dest=tmp_path / "b")
    assert "explain_unavailable" not in result.manifest.training  # its check rows hold a missing 'sex'
    rows = _rows().iloc[[0, 2]]  # 'sex' missing
    records = [{n: _json(v) for n, v in zip(FEATURES, r, strict=True)} for r in rows.itertuples(index=False)]
    with _client(result.path) as client:
        r = client.post("/api/v1/explain", json={"records": [{k: v for k, v in rec.items() if k != "sex"}
                                                             for rec in records]})
    assert r.status_code == 200, r.text
    explained = r.json()["explanations"]
    assert [e["prediction"] for e in explained] == result.pipeline.predict(rows).tolist()
    for e in explained:
        for out in e["outputs"].values():
            assert sum(out["contributions"].values()) + out["expected_value"] == pytest.approx(out["output"])


def test_unseen_and_missing_categories_together(penguins, tmp_path):
    path, _ = penguins
    result = train_file(path, "species", estimator="random_forest", dest=tmp_path / "b", unknown_category="ignore",
                        params={"n_estimators": 15})
    m = result.manifest
    assert m.parity is not None and m.parity.passed and m.parity.max_rel_diff <= REL
    assert m.parity.probes["categories"] == (3 + 1) + (2 + 1 + 1)  # + unseen island; + unseen and missing sex
    assert [f.allow_missing for f in m.features if f.kind == "categorical"] == [False, True]
    rows = pd.DataFrame({"island": ["Atlantis", "Atlantis", "Dream"], "bill_length_mm": [39.1, 50.0, 46.0],
                         "bill_depth_mm": [18.7, 15.0, 17.0], "flipper_length_mm": [181.0, 220.0, 190.0],
                         "body_mass_g": [3750.0, 5000.0, 3600.0], "sex": [np.nan, "unknown", np.nan],
                         "year": [2007, 2008, 2009]}, columns=FEATURES).astype({"island": object, "sex": object})
    for how, labels in _served(result.path, m, rows).items():
        assert labels == result.pipeline.predict(rows).tolist()[:len(labels)], how


def test_xgboost_takes_missing_text_as_a_category(penguins, tmp_path):
    pytest.importorskip("xgboost")
    path, _ = penguins
    result = train_file(path, "body_mass_g", estimator="xgboost", dest=tmp_path / "b", params={"n_estimators": 30})
    m = result.manifest
    assert m.training["missing_text"] == MISSING_TEXT_CATEGORY and m.training["rows_without_target"] == 2
    assert [(f.name, f.allow_missing) for f in m.features if f.kind == "categorical"] == [
        ("species", False), ("island", False), ("sex", True)]
    assert m.parity is not None and m.parity.passed and m.parity.max_rel_diff <= REL
    rows = _rows().drop(columns="body_mass_g").assign(species="Adelie")
    rows["island"] = rows["island"].fillna("Dream")
    served = tabserve.load(result.path).predict(rows[m.feature_names].fillna({"sex": ""}))
    np.testing.assert_allclose(served, result.pipeline.predict(rows), rtol=REL, atol=0)
