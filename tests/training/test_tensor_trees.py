"""The tensor graph (model.tensor.onnx) answers exactly what model.onnx answers, for every tree family.

Each model is exported, its tensor graph built, and both run on one CPU thread over the data, rows with NaN,
and rows on, just below and just above every split value the trees hold: every output (values, labels,
probabilities) must be identical, bit for bit, and the source model's own outputs must agree within 1e-9.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    BaggingClassifier,
    BaggingRegressor,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from tabserve.core.bundle import read_bundle
from tabserve.errors import BundleError
from tabserve.training.convert import FeatureSpec, export_exact
from tabserve.training.convert.tensor_graph import tensor_model
from tabserve.training.convert.tensor_trees import read_ensemble

lgb = pytest.importorskip("lightgbm")
xgb = pytest.importorskip("xgboost")

F = 5
rng = np.random.default_rng(7)
X = rng.normal(size=(600, F))
X[:, 3] = rng.integers(0, 6, size=600)  # a column of codes, for the native categorical splits
X_NAN = X.copy()
X_NAN[rng.random(X.shape) < 0.15] = np.nan
Y = X[:, 0] + np.sin(3 * X[:, 1]) + 0.5 * (X[:, 3] % 3) + rng.normal(scale=0.2, size=600)
Y2 = (Y > np.median(Y)).astype(int)
Y3 = np.digitize(Y, np.quantile(Y, [0.33, 0.66]))


def _session(data: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # one thread: the CPU TreeEnsemble adds its trees strictly in order
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _probe_rows(cpu_graph: bytes) -> np.ndarray:
    """Rows with one column set to each split value the trees hold, and to the doubles just beside it."""
    model = onnx.load_model_from_string(cpu_graph)
    values: dict[int, set[float]] = {}
    for node in model.graph.node:
        if node.op_type == "TreeEnsemble":
            e = read_ensemble(node)
            for f, t in zip(e.feature, e.threshold, strict=True):
                if np.isfinite(t):
                    col, v = (f, t) if f < F else (f - F, -t)  # a negated-copy column reads -x
                    values.setdefault(int(col) % F, set()).add(float(v))
    rows = []
    for col, ts in values.items():
        ts_arr = np.array(sorted(ts))
        probes = np.concatenate([ts_arr, np.nextafter(ts_arr, np.inf), np.nextafter(ts_arr, -np.inf)])
        block = np.resize(X_NAN, (len(probes), F)).copy()
        block[:, col] = probes
        rows.append(block)
    return np.concatenate([X, X_NAN, *rows])


def _check(model: Any, task: str, features: list[FeatureSpec] | None = None,
           feed: dict[str, np.ndarray] | None = None, strategy: str | None = None) -> dict[str, Any]:
    exported = export_exact(model, features or [FeatureSpec(f"x{i}") for i in range(F)], task)  # type: ignore[arg-type]
    tensor = tensor_model(exported.onnx_bytes)
    assert tensor is not None
    if strategy is not None:
        assert strategy in tensor.strategies
    ops = {n.op_type for n in onnx.load_model_from_string(tensor.onnx_bytes).graph.node}
    assert "TreeEnsemble" not in ops
    feed = feed or {"X": _probe_rows(exported.onnx_bytes)}
    cpu, gpu = _session(exported.onnx_bytes), _session(tensor.onnx_bytes)
    names = [o.name for o in cpu.get_outputs()]
    for name, a, b in zip(names, cpu.run(names, feed), gpu.run(names, feed), strict=True):
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), f"{name}: {np.flatnonzero(a != b)[:5]}"
        assert not (a.dtype.kind == "f" and np.any(np.signbit(a) != np.signbit(b))), f"{name}: signed zeros"
    return dict(zip(names, gpu.run(names, feed), strict=True))


NAN_ROWS = slice(len(X), 2 * len(X))  # _probe_rows: X, then X_NAN, then the split values


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    expected = np.asarray(expected, dtype=np.float64).reshape(actual.shape)
    assert np.all(np.abs(actual - expected) <= 1e-9 * np.abs(expected) + 1e-300)


@pytest.mark.parametrize("model", [
    DecisionTreeRegressor(max_depth=12, random_state=0),
    RandomForestRegressor(n_estimators=25, max_depth=6, random_state=0),
    GradientBoostingRegressor(n_estimators=40, random_state=0),
], ids=lambda m: type(m).__name__)
def test_sklearn_regressors(model: Any) -> None:
    model.fit(X_NAN if not isinstance(model, GradientBoostingRegressor) else X, Y)
    out = _check(model, "regression")
    _close(out["prediction"][: len(X)], model.predict(X))


@pytest.mark.parametrize("model, y", [
    (RandomForestClassifier(n_estimators=20, random_state=0), Y2),  # binary: class-1 fractions averaged
    (RandomForestClassifier(n_estimators=20, random_state=0), Y3),  # pure leaves: votes
    (ExtraTreesClassifier(n_estimators=15, min_samples_leaf=4, random_state=0), Y3),  # leaf vectors, a mean
    (GradientBoostingClassifier(n_estimators=30, random_state=0), Y2),
    (GradientBoostingClassifier(n_estimators=20, max_depth=4, random_state=0), Y3),
], ids=["forest-binary", "forest-votes", "extratrees-vectors", "gb-binary", "gb-multiclass"])
def test_sklearn_classifiers(model: Any, y: np.ndarray) -> None:
    model.fit(X_NAN if not isinstance(model, GradientBoostingClassifier) else X, y)
    out = _check(model, "classification")
    assert np.array_equal(out["label"][: len(X)], model.predict(X))
    _close(out["probabilities"][: len(X)], model.predict_proba(X))


def test_hist_gradient_boosting_nan_and_categories() -> None:
    model = HistGradientBoostingClassifier(max_iter=40, categorical_features=[3], random_state=0).fit(X_NAN, Y3)
    out = _check(model, "classification")
    assert np.array_equal(out["label"][NAN_ROWS], model.predict(X_NAN))
    _close(out["probabilities"][NAN_ROWS], model.predict_proba(X_NAN))
    reg = HistGradientBoostingRegressor(max_iter=30, categorical_features=[3], random_state=0).fit(X_NAN, Y)
    _close(_check(reg, "regression")["prediction"][NAN_ROWS], reg.predict(X_NAN))


def test_hist_gradient_boosting_text_categories() -> None:
    """Text categories are looked up on the CPU (strings never go to a GPU); the trees after them are tensors."""
    frame = pd.DataFrame(X_NAN[:, [0, 1, 2, 4]], columns=["a", "b", "c", "e"])
    frame["kind"] = pd.Categorical(np.array(["red", "green", "blue", "grey", "pink", "teal"])[X[:, 3].astype(int)])
    model = HistGradientBoostingRegressor(max_iter=30, categorical_features="from_dtype", random_state=0)
    model.fit(frame, Y)
    features = [*(FeatureSpec(c) for c in "abce"), FeatureSpec("kind", "categorical")]
    feed = {"X": frame[list("abce")].to_numpy(), "X_cat": frame[["kind"]].astype(str).to_numpy(dtype=object)}
    out = _check(model, "regression", features, feed)
    _close(out["prediction"], model.predict(frame))


@pytest.mark.parametrize("objective, y", [("regression", Y), ("binary", Y2), ("multiclass", Y3)])
def test_lightgbm(objective: str, y: np.ndarray) -> None:
    params = {"n_estimators": 60, "num_leaves": 31, "min_child_samples": 5, "verbose": -1, "random_state": 0}
    model = (lgb.LGBMRegressor(**params) if objective == "regression" else lgb.LGBMClassifier(**params))
    model.fit(X_NAN, y, categorical_feature=[3])
    out = _check(model, "regression" if objective == "regression" else "classification")
    if objective == "regression":
        _close(out["prediction"][NAN_ROWS], model.predict(X_NAN))
    else:
        assert np.array_equal(out["label"][NAN_ROWS], model.predict(X_NAN))
        _close(out["probabilities"][NAN_ROWS], model.predict_proba(X_NAN))


@pytest.mark.parametrize("objective, y", [("reg:squarederror", Y), ("binary:logistic", Y2),
                                          ("multi:softprob", Y3)])
def test_xgboost(objective: str, y: np.ndarray) -> None:
    params = {"n_estimators": 40, "max_depth": 5, "objective": objective, "random_state": 0}
    model = xgb.XGBRegressor(**params) if objective.startswith("reg") else xgb.XGBClassifier(**params)
    model.fit(X_NAN, y)
    out = _check(model, "regression" if objective.startswith("reg") else "classification")
    if objective.startswith("reg"):
        _close(out["prediction"][NAN_ROWS], model.predict(X_NAN))
    else:
        assert np.array_equal(out["label"][NAN_ROWS], model.predict(X_NAN))
        _close(out["probabilities"][NAN_ROWS], model.predict_proba(X_NAN))


def test_xgboost_native_categories_as_codes() -> None:
    frame = pd.DataFrame(X_NAN, columns=[f"x{i}" for i in range(F)])
    frame["x3"] = pd.Categorical(X[:, 3].astype(int))
    model = xgb.XGBClassifier(n_estimators=30, max_depth=4, enable_categorical=True, tree_method="hist",
                              random_state=0).fit(frame, Y3)
    out = _check(model, "classification", feed={"X": frame.astype(float).to_numpy()})
    assert np.array_equal(out["label"], model.predict(frame))


def test_both_strategies_agree() -> None:
    """The same forest as a perfect-tree and as a tree-traversal graph: identical answers."""
    model = RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(X_NAN, Y)
    assert "perfect" in tensor_model(export_exact(model, [FeatureSpec(f"x{i}") for i in range(F)],
                                                  "regression").onnx_bytes).strategies  # type: ignore[union-attr]
    deep = RandomForestRegressor(n_estimators=10, random_state=0).fit(X_NAN, Y)  # fully grown: too deep to pad
    _check(deep, "regression", strategy="tree")
    _check(model, "regression", strategy="perfect")


def test_no_trees_no_tensor_graph() -> None:
    model = LinearRegression().fit(X, Y)
    assert tensor_model(export_exact(model, [FeatureSpec(f"x{i}") for i in range(F)], "regression").onnx_bytes) is None


def test_bundle_holds_the_checked_tensor_graph(demo_bundle: Any, tmp_path: Any) -> None:
    """``tabserve train`` writes model.tensor.onnx beside model.onnx, checked on the same parity rows."""
    bundle = read_bundle(demo_bundle)
    info = bundle.manifest.tensor_model
    assert info is not None and bundle.tensor_bytes is not None
    assert info.parity.passed and info.parity.label_mismatches == 0
    assert info.parity.rows_checked == bundle.manifest.parity.rows_checked  # type: ignore[union-attr]
    assert info.parity.max_rel_diff <= 1e-9
    assert info.strategy in ("perfect", "tree") and info.trees == 100
    rows = np.random.default_rng(1).normal(size=(300, len(bundle.manifest.features)))
    cpu, tensor = _session(bundle.onnx_bytes), _session(bundle.tensor_bytes)
    assert np.array_equal(cpu.run(None, {"X": rows})[0], tensor.run(None, {"X": rows})[0])

    copy = tmp_path / "copy"
    shutil.copytree(demo_bundle, copy)
    (copy / info.file).write_bytes(bundle.tensor_bytes + b"\0")
    with pytest.raises(BundleError, match="model.tensor.onnx has sha256"):
        read_bundle(copy)


@pytest.mark.parametrize("model, task, y", [
    (IsolationForest(n_estimators=50, random_state=0), "anomaly", None),
    (BaggingRegressor(n_estimators=10, random_state=0), "regression", Y),
    (BaggingClassifier(n_estimators=10, random_state=0), "classification", Y3),
    (AdaBoostClassifier(n_estimators=20, random_state=0), "classification", Y3),  # a full CumSum stays
    (AdaBoostRegressor(n_estimators=20, random_state=0), "regression", Y),
    (make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)), "classification", Y2),
], ids=["isolation", "bagging-reg", "bagging-clf", "adaboost-clf", "adaboost-reg", "scaled-forest"])
def test_ensembles_built_on_trees(model: Any, task: str, y: np.ndarray | None) -> None:
    model.fit(X) if y is None else model.fit(X, y)
    out = _check(model, task)
    if task == "regression":
        _close(out["prediction"][: len(X)], model.predict(X))
    else:
        assert np.array_equal(out["label"][: len(X)], model.predict(X))
