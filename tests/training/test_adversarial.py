"""Adversarial parity rows: at and around every split threshold, every category, NaN where allowed."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeRegressor

from tabserve.core.manifest import Feature
from tabserve.training.adversarial import UNSEEN, adversarial_rows, invert, threshold_probes
from tabserve.training.export import export_onnx
from tabserve.training.parity import check


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, np.ndarray, list[Feature]]:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y.to_numpy(), [Feature(name=c, dtype="float64") for c in X.columns]


def _tree(max_depth: int = 5) -> DecisionTreeRegressor:
    return DecisionTreeRegressor(max_depth=max_depth, random_state=0)


@pytest.mark.parametrize("scaler", [StandardScaler(), MinMaxScaler(), RobustScaler()], ids=repr)
def test_threshold_probes_land_on_the_thresholds_after_scaling(scaler, diabetes):
    X, y, features = diabetes
    model = make_pipeline(scaler, _tree()).fit(X.to_numpy(), y)
    tree = model[-1].tree_
    rows = adversarial_rows(model, features, X, list(range(len(X))), limit=10_000)
    scaled = model[0].transform(rows.rows.to_numpy())
    inner = tree.children_left >= 0
    splits = {(int(f), float(t)) for f, t in zip(tree.feature[inner], tree.threshold[inner], strict=True)}
    hit = set()
    for k, description in enumerate(rows.descriptions):
        column = list(X.columns).index(description.split("'")[1])
        if (column, float(scaled[k, column])) in splits:
            hit.add((column, float(scaled[k, column])))
    # t, its two double neighbours, float32(t) and its two float32 neighbours (some coincide)
    assert 3 * len(splits) <= rows.counts["thresholds"] <= 6 * len(splits)
    # the scaled probe is the threshold itself, exactly, wherever some double scales onto it (most of
    # them: here 23 of 28 for StandardScaler; the others are probed one ulp away on each side)
    assert len(hit) >= 0.75 * len(splits)


def test_rows_are_bounded_and_deterministic(diabetes):
    X, y, features = diabetes
    model = make_pipeline(StandardScaler(), _tree(8)).fit(X.to_numpy(), y)
    first = adversarial_rows(model, features, X, list(range(len(X))), limit=50)
    second = adversarial_rows(model, features, X, list(range(len(X))), limit=50)
    assert len(first) == 50 and first.counts["thresholds"] > 50
    pd.testing.assert_frame_equal(first.rows, second.rows)
    assert first.descriptions == second.descriptions
    assert first.descriptions[0].startswith("holdout row 0 with '") and "(split threshold)" in first.descriptions[0]


def test_categories_unseen_values_and_missing_values():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": pd.Series(rng.choice(["Paris", "Lyon", "Nice"], 120), dtype=object),
                          "age": rng.normal(40, 10, 120)})
    frame.loc[::10, "age"] = np.nan
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                            ("num", SimpleImputer(), ["age"])])
    model = make_pipeline(ct, _tree()).fit(frame, frame["age"].fillna(0) + (frame["city"] == "Paris") * 9)
    features = [Feature(name="city", dtype="str", kind="categorical", categories=["Lyon", "Nice", "Paris"],
                        handle_unknown="ignore"), Feature(name="age", dtype="float64", allow_missing=True)]
    rows = adversarial_rows(model, features, frame, list(range(120)))
    assert rows.counts["categories"] == 4 and rows.counts["missing"] == 1
    assert set(rows.rows["city"]) >= {"Lyon", "Nice", "Paris", UNSEEN}
    assert rows.rows["age"].isna().any()
    # the tree splits one-hot columns: those thresholds come back as the city's categories
    assert set(threshold_probes(model, ["city", "age"]).get(0, set())) <= {"Lyon", "Nice", "Paris", UNSEEN}


def test_a_transformer_that_cannot_be_inverted_is_not_probed(diabetes):
    X, y, _ = diabetes
    model = make_pipeline(PCA(n_components=3), _tree()).fit(X.to_numpy(), y)
    assert invert(model[0], {0: {0.5}}, list(X.columns)) == {}
    assert threshold_probes(model, list(X.columns)) == {}


def test_a_threshold_one_float32_step_off_is_caught_only_by_adversarial_rows(diabetes):
    X, y, features = diabetes
    model = _tree(6).fit(X.to_numpy(), y)
    shifted = copy.deepcopy(model)
    inner = shifted.tree_.children_left >= 0
    t = shifted.tree_.threshold
    t[inner] = np.nextafter(t[inner].astype(np.float32), np.float32(-np.inf)).astype(np.float64)
    exported = export_onnx(shifted, features, "regression")
    ids = np.arange(len(X))

    holdout_only, _ = check(model, exported, features, X, ids, adversarial=0)
    assert holdout_only.passed  # no data row lies between a threshold and its float32 neighbour

    parity, _ = check(model, exported, features, X, ids)
    assert not parity.passed and parity.adversarial_rows > 0 and parity.checked_on == "holdout+adversarial"
    assert parity.worst_details[0].startswith("adversarial row: holdout row ")
