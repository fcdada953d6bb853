"""Native categorical features exported exactly: HistGradientBoosting (``categorical_features``, also
"from_dtype"), LightGBM (``categorical_feature``, pandas ``category`` columns, native text files) and
XGBoost (``enable_categorical``, native JSON). Two inputs: text categories (what a client sends, the graph
looks them up) against the model on a DataFrame with that ``category``; and numbers (the model's codes)
against the model on the array, with random, non-integer and threshold rows. Each includes missing values
and categories the model never saw, routed as the library routes them. 1e-9 relative, identical labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from packaging.version import Version
from sklearn.datasets import load_diabetes, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from tabserve.errors import ExportError
from tabserve.training import native
from tabserve.training.convert import FeatureSpec, export_exact
from tabserve.training.convert.xgboost import XGBOOST_CATEGORIES_SINCE

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

# XGBoost saves a DataFrame's categories in its model since 3.1; before, only codes (text is refused)
XGBOOST_NAMES = Version(xgb.__version__) >= Version(XGBOOST_CATEGORIES_SINCE)
NO_XGBOOST_NAMES = (f"XGBoost {xgb.__version__} does not save a DataFrame's categories in its model (XGBoost >= "
                    f"{XGBOOST_CATEGORIES_SINCE} does): text categories cannot be mapped")

REL = 1e-9
TINY = np.finfo(np.float64).tiny
UNSEEN = "never seen in fit"
BANDS = ["very low", "low", "middle", "high", "very high"]


def _bands(values: np.ndarray, names: list[str]) -> np.ndarray:
    edges = np.quantile(values, np.linspace(0, 1, len(names) + 1)[1:-1])
    return np.array(names, dtype=object)[np.digitize(values, edges)]


def _with_missing(column: np.ndarray, seed: int) -> np.ndarray:
    out = column.copy()
    out[np.random.default_rng(seed).random(len(out)) < 0.1] = None
    return out


def _diabetes() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Diabetes with sex as text and blood pressure as five named bands (10% of each missing)."""
    data = load_diabetes(as_frame=True)
    frame = data.frame.drop(columns=["target", "sex", "bp"])
    sex = np.where(data.frame["sex"] > 0, "male", "female").astype(object)
    frame["sex"] = pd.Categorical(_with_missing(sex, 1), categories=["female", "male"])
    frame["bp band"] = pd.Categorical(_with_missing(_bands(data.frame["bp"].to_numpy(), BANDS), 2),
                                      categories=BANDS)
    return frame, data.target.to_numpy(), ["sex", "bp band"]


def _flowers(loader: Any, banded: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Iris or wine with one measurement given as named bands instead (10% missing)."""
    data = loader(as_frame=True)
    frame = data.frame.drop(columns=["target", banded])
    names = ["tiny", "small", "medium", "large", "huge", "giant"]
    frame["band"] = pd.Categorical(_with_missing(_bands(data.frame[banded].to_numpy(), names), 3),
                                   categories=names)
    return frame, data.target.to_numpy(), ["band"]


def _text_rows(frame: pd.DataFrame, categorical: list[str], unseen: bool = True) -> pd.DataFrame:
    """The data, then for each categorical column every category, a missing value and an unseen category
    (not for XGBoost, which refuses one: so does the bundle, see ``test_xgboost_refuses_unseen...``)."""
    rows = [frame]
    for column in categorical:
        probes = [*frame[column].cat.categories, None, *([UNSEEN] if unseen else [])]
        block = frame.iloc[np.arange(len(probes) * 4) % len(frame)].copy()
        block[column] = pd.Categorical(np.resize(np.array(probes, dtype=object), len(block)))
        rows.append(block)
    out = pd.concat([r.astype({c: object for c in categorical}) for r in rows], ignore_index=True)
    for column in categorical:
        out[column] = pd.Categorical(out[column], categories=[*frame[column].cat.categories,
                                                              *([UNSEEN] if unseen else [])])
    return out


def _onnx(model: Any, frame: pd.DataFrame, categorical: list[str], task: str) -> list[np.ndarray]:
    features = [FeatureSpec(str(c), "categorical" if c in categorical else "numeric") for c in frame.columns]
    exported = export_exact(model, features, task)  # type: ignore[arg-type]
    session = ort.InferenceSession(exported.onnx_bytes, providers=["CPUExecutionProvider"])
    numeric = [c for c in frame.columns if c not in categorical]
    text = frame[categorical].astype(object).where(frame[categorical].notna(), "").astype(str)
    feed = {"X_cat": text.to_numpy(dtype=object)}
    if numeric:
        feed["X"] = frame[numeric].to_numpy(dtype=np.float64)
    return session.run(None, feed)


def _close(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    error = float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), TINY), initial=0.0))
    assert error <= REL, f"max relative error {error:.3g}"
    return error


def _check(outputs: list[np.ndarray], task: str, predict: Any, predict_proba: Any = None) -> None:
    if task == "regression":
        _close(outputs[0], np.asarray(predict()).reshape(-1))
        return
    expected = np.asarray(predict())
    _close(outputs[1], np.asarray(predict_proba()))
    assert np.array_equal(outputs[0].astype(expected.dtype), expected)


MODELS = {
    "hist_gradient_boosting": lambda task: (HistGradientBoostingRegressor if task == "regression" else
                                            HistGradientBoostingClassifier)(
        max_iter=40, categorical_features="from_dtype", random_state=0),
    "lightgbm": lambda task: (lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier)(
        n_estimators=40, min_data_per_group=5, cat_smooth=1, verbose=-1, n_jobs=1),
    "xgboost": lambda task: (xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier)(
        n_estimators=40, enable_categorical=True, max_cat_to_onehot=1, n_jobs=1),
}
DATA = {"diabetes": (_diabetes, "regression"), "diabetes_binary": (_diabetes, "classification"),
        "iris": (lambda: _flowers(load_iris, "petal width (cm)"),
                                                        "classification"),
        "wine": (lambda: _flowers(load_wine, "alcohol"), "classification")}


@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("library", sorted(MODELS))
def test_text_categories_as_the_model_reads_its_dataframe(library, data):
    if library == "xgboost" and not XGBOOST_NAMES:
        pytest.skip(NO_XGBOOST_NAMES)
    make, task = DATA[data]
    frame, y, categorical = make()
    if data == "diabetes_binary":
        y = (y > np.median(y)).astype(int)
    if task == "classification" and data == "wine":
        y = np.array(["barolo", "grignolino", "barbera"], dtype=object)[y]  # string labels
        if library == "xgboost":
            y = (y == "barolo").astype(int)  # XGBClassifier takes 0..K-1: binary here
    model = MODELS[library](task).fit(frame, y)
    rows = _text_rows(frame, categorical, unseen=library != "xgboost")
    outputs = _onnx(model, rows, categorical, task)
    proba = (lambda: model.predict_proba(rows)) if task == "classification" else None
    _check(outputs, task, lambda: model.predict(rows), proba)
    assert rows[categorical[0]].isna().sum() >= 4  # the probes are there


def _codes(frame: pd.DataFrame, categorical: list[str]) -> np.ndarray:
    out = frame.copy()
    for c in categorical:
        out[c] = frame[c].cat.codes.astype(float).where(frame[c].notna())
    return out.to_numpy(dtype=np.float64)


def _code_rows(model: Any, X: np.ndarray, columns: list[int]) -> np.ndarray:
    """Data rows; rows with each categorical column at the model's split probes (codes, halves, -1, past
    the last); random values from -2 to 12 (non-integers, unseen codes); NaN."""
    from tabserve.training.convert.registry import lookup

    found = lookup(model).thresholds(model)  # type: ignore[misc]
    rng = np.random.default_rng(0)
    blocks = [X]
    for c in columns:
        probes = np.concatenate([found.get(c, np.zeros(0)), rng.uniform(-2, 12, 40), [np.nan, 2**31, 1e300]])
        block = X[rng.integers(0, len(X), len(probes))].copy()
        block[:, c] = probes
        blocks.append(block)
    return np.vstack(blocks)


@pytest.mark.parametrize("library", sorted(MODELS))
def test_integer_codes_as_the_model_reads_its_array(library):
    frame, y, categorical = _diabetes()
    X = _codes(frame, categorical)
    columns = [list(frame.columns).index(c) for c in categorical]
    if library == "hist_gradient_boosting":
        model = HistGradientBoostingRegressor(max_iter=40, categorical_features=columns, random_state=0).fit(X, y)
    elif library == "lightgbm":
        model = lgb.LGBMRegressor(n_estimators=40, min_data_per_group=5, cat_smooth=1, verbose=-1, n_jobs=1)
        model.fit(X, y, categorical_feature=columns)
    else:
        types = ["c" if i in columns else "q" for i in range(X.shape[1])]
        model = xgb.XGBRegressor(n_estimators=40, enable_categorical=True, max_cat_to_onehot=1, n_jobs=1,
                                 feature_types=types).fit(X, y)
    rows = _code_rows(model, X, columns)
    features = [FeatureSpec(f"f{i}") for i in range(X.shape[1])]
    session = ort.InferenceSession(export_exact(model, features, "regression").onnx_bytes,
                                   providers=["CPUExecutionProvider"])
    _close(session.run(None, {"X": rows})[0], model.predict(rows))


def test_native_files_keep_their_categories(tmp_path):
    """A LightGBM text file and an XGBoost JSON file of models fitted on category columns, loaded as
    Boosters: the text categories come from the files (pandas_categorical; XGBoost's cats)."""
    frame, y, categorical = _flowers(load_iris, "petal width (cm)")
    rows = _text_rows(frame, categorical)
    fitted = lgb.LGBMClassifier(n_estimators=30, min_data_per_group=5, cat_smooth=1, verbose=-1, n_jobs=1)
    fitted.fit(frame, y)
    fitted.booster_.save_model(tmp_path / "m.txt")
    booster = lgb.Booster(model_file=tmp_path / "m.txt")
    model = native.wrap(booster, "lightgbm", "classification", [0, 1, 2])
    outputs = _onnx(model, rows, categorical, "classification")
    expected = booster.predict(rows)
    _close(outputs[1], expected)
    assert np.array_equal(outputs[0], np.argmax(expected, axis=1))

    binary = (y == 2).astype(int)
    xgb.XGBClassifier(n_estimators=30, enable_categorical=True, max_cat_to_onehot=1, n_jobs=1).fit(
        frame, binary).save_model(tmp_path / "m.json")
    booster = xgb.Booster(model_file=tmp_path / "m.json")
    model = native.wrap(booster, "xgboost", "classification", ["other", "virginica"])
    rows = _text_rows(frame, categorical, unseen=False)
    if not XGBOOST_NAMES:  # no categories in the file: text is refused, never mapped to some code
        with pytest.raises(ExportError, match=f"XGBoost before {XGBOOST_CATEGORIES_SINCE} does not save"):
            _onnx(model, rows, categorical, "classification")
        return
    outputs = _onnx(model, rows, categorical, "classification")
    p = booster.predict(xgb.DMatrix(rows, enable_categorical=True))
    _close(outputs[1][:, 1], p)
    assert np.array_equal(outputs[0], np.where(p > 0.5, "virginica", "other"))


def test_a_text_column_the_model_splits_as_a_number_is_refused():
    frame, y, _ = _diabetes()
    numeric = frame.drop(columns=["sex", "bp band"])
    numeric["sex"] = frame["sex"].cat.codes.astype(float)
    model = HistGradientBoostingRegressor(max_iter=5).fit(numeric, y)
    features = [FeatureSpec(c, "categorical" if c == "sex" else "numeric") for c in numeric.columns]
    with pytest.raises(ExportError, match="both numeric and string columns|is text"):
        export_exact(model, features, "regression")


def test_unseen_categories_follow_the_library():
    """HistGradientBoosting and LightGBM read an unseen category as missing (the text tests above check the
    values); XGBoost 3.2's re-coding either fails ("not in the training set", seen on diabetes) or answers
    for some other code (seen on iris): the bundle refuses an unseen category there."""
    frame, y, _ = _flowers(load_iris, "petal width (cm)")
    names = list(frame.columns)
    bands = ["tiny", "small", "medium", "large", "huge", "giant"]
    for library, order, unknown in [("hist_gradient_boosting", sorted(bands), "ignore"),  # its codes: sorted
                                    ("lightgbm", bands, "ignore"), ("xgboost", bands, "error")]:
        model = MODELS[library]("classification").fit(frame, y)
        if library == "xgboost" and not XGBOOST_NAMES:
            assert native.categorical_features(model, names) == {}  # no names: no text taken
            pytest.skip(NO_XGBOOST_NAMES)
        assert native.categorical_features(model, names) == {"band": (order, unknown)}
    frame, y, categorical = _diabetes()
    model = MODELS["xgboost"]("regression").fit(frame, y)
    with pytest.raises(xgb.core.XGBoostError, match="not in the training set"):
        model.predict(_text_rows(frame, categorical))


@pytest.mark.parametrize("library", ["lightgbm", pytest.param("xgboost", marks=pytest.mark.skipif(
    not XGBOOST_NAMES, reason=f"{NO_XGBOOST_NAMES} (nor numbers to their codes)"))])
def test_a_category_of_numbers_is_looked_up_as_the_dataframe_holds_it(library):
    """A ``category`` dtype of numbers (a score of 1, 2, 4 or 8): the model's codes are positions, a row
    gives the number itself; any other number reads as missing (the libraries refuse a plain number)."""
    data = load_diabetes(as_frame=True).frame
    frame = data.drop(columns=["target", "s4"])
    levels = [1, 2, 4, 8]
    frame["s4 level"] = pd.Categorical(np.array(levels)[np.digitize(data["s4"], [-0.03, 0, 0.03])],
                                       categories=levels)
    model = MODELS[library]("regression").fit(frame, data["target"].to_numpy())
    names = list(frame.columns)
    assert native.numeric_categories(model, names) == {"s4 level": levels}
    numbers = frame.assign(**{"s4 level": frame["s4 level"].astype(float)}).to_numpy(dtype=np.float64)
    rows = _code_rows(model, numbers, [names.index("s4 level")])
    session = ort.InferenceSession(export_exact(model, [FeatureSpec(n) for n in names], "regression").onnx_bytes,
                                   providers=["CPUExecutionProvider"])
    expected = model.predict(native.as_categories(pd.DataFrame(rows, columns=names),
                                                  {"s4 level": levels}))
    _close(session.run(None, {"X": rows})[0], expected)


@pytest.mark.skipif(XGBOOST_NAMES, reason=f"XGBoost >= {XGBOOST_CATEGORIES_SINCE} saves its categories")
def test_xgboost_without_categories_refuses_text_and_takes_codes():
    """A model of an XGBoost that does not save categories (< 3.1), fitted on a DataFrame: text is refused
    (exporting it and importing it), never mapped to codes the model may read otherwise; codes are taken."""
    from tabserve.training.missing import accepting_missing

    frame, y, categorical = _diabetes()
    model = MODELS["xgboost"]("regression").fit(frame, y)
    features = [FeatureSpec(c, "categorical" if c in categorical else "numeric") for c in frame.columns]
    with pytest.raises(ExportError, match=f"XGBoost before {XGBOOST_CATEGORIES_SINCE} does not save"):
        export_exact(model, features, "regression")
    with pytest.raises(ExportError, match="'sex', 'bp band'"):
        native.require_text_categories(model, list(frame.columns), categorical)
    from tabserve.core.manifest import Feature

    specs = [Feature(name=c, kind="categorical", dtype="str") if c in categorical else
             Feature(name=c, dtype="float64") for c in frame.columns]
    with pytest.raises(ExportError, match=f"XGBoost >= {XGBOOST_CATEGORIES_SINCE}"):
        accepting_missing(model, specs, set())
    X = _codes(frame, categorical)
    session = ort.InferenceSession(export_exact(model, [FeatureSpec(c) for c in frame.columns], "regression")
                                   .onnx_bytes, providers=["CPUExecutionProvider"])
    _close(session.run(None, {"X": X})[0], model.predict(frame))
