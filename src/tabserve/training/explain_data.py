"""The explain file of a bundle (``explain.npz``), built from the fitted model at export time.

The pipeline is split into its preprocessing steps and the final estimator. The preprocessing becomes a
small ONNX graph (the exporter's own converters, so the estimator's columns are bit-identical to those
inside ``model.onnx``) and a map from each column to the input feature it comes from. The estimator
becomes arrays: its trees (``explain_trees``) or its coefficients. Before anything is written, the
arrays are checked against the model itself: the trees' outputs on the check rows must equal the
model's own raw outputs (rtol/atol 1e-6), else no explain file is written and the manifest says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from onnx import TensorProto, helper
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectorMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    Binarizer,
    FunctionTransformer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    SplineTransformer,
    StandardScaler,
    TargetEncoder,
)

from tabserve.core.explain.artifact import Artifact, Linear, to_bytes
from tabserve.core.explain.explainer import Explainer, one_line
from tabserve.core.manifest import Feature, Task
from tabserve.errors import ExportError
from tabserve.training.convert.columns import selections
from tabserve.training.convert.encoders import feature_codes
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import convert
from tabserve.training.estimators import model_input
from tabserve.training.explain_trees import Estimator, ExplainUnsupported, read_estimator

CHECK_ROWS = 200
RTOL = ATOL = 1e-6
_ELEMENTWISE = (StandardScaler, RobustScaler, MaxAbsScaler, MinMaxScaler)
_PER_COLUMN = (Binarizer, FunctionTransformer, OrdinalEncoder, PowerTransformer, QuantileTransformer)


@dataclass(frozen=True, slots=True)
class ExplainBuild:
    data: bytes | None  # explain.npz, or None when the model cannot be explained
    manifest: dict[str, Any] | None  # the manifest's ``explain`` section (write_bundle adds file and hash)
    reason: str | None  # why there is no explain file
    columns: list[int] | None  # feature index of each estimator column (also used for importance)


def build_explain(model: Any, features: Sequence[Feature], task: Task, rows: pd.DataFrame) -> ExplainBuild:
    """The explain file of ``model`` (a fitted estimator or pipeline); ``rows`` (training or sample rows, as
    for the parity check) give the linear models' background mean and check the arrays."""
    steps, final = split_pipeline(model)
    try:
        columns = column_map(steps, features)
        estimator = read_estimator(final, task)
        preprocess = preprocess_graph(steps, features) if steps else None
        cols = transform(model, steps, rows)
        if cols.shape[1] != len(columns):
            raise ExplainUnsupported(f"the preprocessing makes {cols.shape[1]} columns but {len(columns)} "
                                     "were mapped to features")
        linear = None
        if estimator.linear is not None:
            coef, intercept = estimator.linear
            linear = Linear(coef, intercept, np.nanmean(cols, axis=0) if len(cols) else np.zeros(len(columns)))
        artifact = Artifact(estimator.kind, estimator.space, estimator.outputs, np.array(columns), preprocess,
                            estimator.trees, linear, type(final).__name__)
        data = to_bytes(artifact)
        _check(artifact, features, estimator, final, model, rows, cols)
    except ExplainUnsupported as exc:
        return _unavailable(str(exc))
    except ExportError as exc:
        return _unavailable(f"its preprocessing cannot be exported on its own: {one_line(str(exc), 300)}")
    except Exception as exc:  # noqa: BLE001 - explanations are optional: never fail a training for them
        return _unavailable(f"explanation data for {type(final).__name__} could not be built ({type(exc).__name__}: "
                            f"{one_line(str(exc), 200)}); the model is served without explanations")
    section = {"kind": artifact.kind, "space": artifact.space, "outputs": artifact.outputs,
               "estimator": artifact.estimator}
    return ExplainBuild(data, section, None, columns)


def _unavailable(reason: str) -> ExplainBuild:
    """No explain file: the reason is stored in the manifest, answered by /api/v1/explain (422) and printed
    by ``tabserve train``/``import``, so it is one line (never a library's multi-line message)."""
    return ExplainBuild(None, None, one_line(reason), None)


def split_pipeline(model: Any) -> tuple[list[Any], Any]:
    """(preprocessing steps, final estimator), nested pipelines flattened, 'passthrough'/None dropped."""
    if not isinstance(model, Pipeline):
        return [], model
    steps: list[Any] = []
    for _, step in model.steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        if isinstance(step, Pipeline):
            inner, last = split_pipeline(step)
            steps += inner
            steps.append(last)
        else:
            steps.append(step)
    return steps[:-1], steps[-1]


def column_map(steps: Sequence[Any], features: Sequence[Feature]) -> list[int]:
    """For each column the final estimator sees, the index (in ``features``) of the feature it comes from."""
    names = [f.name for f in features]
    current: list[int] | None = None  # None: still the whole table, columns by name
    for step in steps:
        if isinstance(step, ColumnTransformer):
            selected_from = names if current is None else [names[i] for i in current]
            out: list[int] = []
            for _, transformer, chosen in selections(step, selected_from):
                out += _columns_of(transformer, [names.index(c) for c in chosen])
            current = out
        else:
            current = _columns_of(step, _numeric(features) if current is None else current)
    return _numeric(features) if current is None else current


def _numeric(features: Sequence[Feature]) -> list[int]:
    return [i for i, f in enumerate(features) if f.kind == "numeric"]


def _columns_per_feature(step: Any) -> list[int] | None:
    """How many output columns each input column makes, for steps that expand columns one by one."""
    if isinstance(step, KBinsDiscretizer):
        return [1] * len(step.n_bins_) if step.encode == "ordinal" else [int(b) for b in step.n_bins_]
    if isinstance(step, TargetEncoder):
        k = len(step.classes_) if step.target_type_ == "multiclass" else 1
        return [k] * len(step.categories_)
    if isinstance(step, SplineTransformer):
        return [spl.c.shape[1] - (not step.include_bias) for spl in step.bsplines_]
    return None


def _columns_of(step: Any, cols: list[int]) -> list[int]:
    if isinstance(step, str) and step == "passthrough":
        return cols
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            if inner is not None and not (isinstance(inner, str) and inner == "passthrough"):
                cols = _columns_of(inner, cols)
        return cols
    if isinstance(step, _ELEMENTWISE + _PER_COLUMN):  # each output column from its own input column
        return cols
    repeats = _columns_per_feature(step)
    if repeats is not None:
        return [c for c, r in zip(cols, repeats, strict=True) for _ in range(r)]
    if isinstance(step, SelectorMixin):
        return [cols[int(i)] for i in step.get_support(indices=True)]
    if isinstance(step, OneHotEncoder):
        return [c for code, c in zip(feature_codes(step), cols, strict=True) for _ in range(code.width)]
    if isinstance(step, SimpleImputer):
        stats = np.asarray(step.statistics_, dtype=np.float64)
        keep = cols if step.keep_empty_features else [c for c, s in zip(cols, stats, strict=True)
                                                         if not np.isnan(s)]
        extra = [cols[int(i)] for i in step.indicator_.features_] if step.add_indicator else []
        return keep + extra
    raise ExplainUnsupported(f"{type(step).__name__} mixes or reshapes columns in a way tabserve cannot trace "
                             "back to input features")


def preprocess_graph(steps: Sequence[Any], features: Sequence[Feature]) -> bytes:
    """An ONNX graph from the model's inputs (``X`` and/or ``X_cat``, as in model.onnx) to the estimator's
    columns (``columns``, double [N, C]), built by the exporter's converters."""
    graph = Graph()
    numeric = [f.name for f in features if f.kind == "numeric"]
    strings = [f.name for f in features if f.kind == "categorical"]
    num = Tensor("X", len(numeric)) if numeric else None
    cat = Tensor("X_cat", len(strings), "str") if strings else None
    table_columns = {f.name: ((num, numeric.index(f.name)) if f.kind == "numeric" else (cat, strings.index(f.name)))
                     for f in features}
    inputs = []
    if num is not None:
        inputs.append(helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, num.width]))
    if cat is not None:
        inputs.append(helper.make_tensor_value_info("X_cat", TensorProto.STRING, [None, cat.width]))
    out: Any = Table(num, cat, table_columns)  # type: ignore[arg-type]
    for step in steps:
        out = convert(graph, step, out)
    if not isinstance(out, Tensor) or out.dtype != "float64":
        raise ExplainUnsupported("the preprocessing does not end in one numeric table")
    graph.op("Identity", [out.name], out="columns")
    output = helper.make_tensor_value_info("columns", TensorProto.DOUBLE, [None, out.width])
    return graph.model(inputs, [output]).SerializeToString()


def transform(model: Any, steps: Sequence[Any], rows: pd.DataFrame) -> np.ndarray:
    """The estimator's columns for ``rows``, computed by scikit-learn (as the model was fitted)."""
    X = model_input(model, rows)
    for step in steps:
        X = step.transform(X) if not (isinstance(step, str)) else X
    if hasattr(X, "toarray"):  # a sparse result (KBinsDiscretizer's one-hot, a ColumnTransformer of it)
        X = X.toarray()
    return np.asarray(X, dtype=np.float64)


def _check(artifact: Artifact, features: Sequence[Feature], estimator: Estimator, final: Any, model: Any,
           rows: pd.DataFrame, cols: np.ndarray) -> None:
    """The explained outputs on the check rows must be the model's own (through the bundle's preprocessing)."""
    if not len(rows):
        return
    rows = rows.iloc[:CHECK_ROWS]
    explainer = Explainer(artifact, [f.name for f in features], "X", "X_cat")
    x = _model_input(rows, features)
    mine = explainer.columns(x)
    _, out, _, _ = explainer._columns_explain(mine, "approximate")  # the leaves reached, summed: no SHAP
    expected = estimator.raw(final, cols[:CHECK_ROWS])
    if out.shape != expected.shape or not np.allclose(out, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(out - expected))) if out.shape == expected.shape else float("nan")
        raise ExplainUnsupported(f"the explain arrays do not reproduce {type(final).__name__}'s raw output "
                                 f"(max difference {worst:.3g} on {len(rows)} rows); no explanation data was "
                                 "written")


def _model_input(rows: pd.DataFrame, features: Sequence[Feature]) -> Any:
    from tabserve.core.schema import MISSING_CATEGORY, TabularBatch

    numeric = [f.name for f in features if f.kind == "numeric"]
    strings = [f.name for f in features if f.kind == "categorical"]
    num = rows[numeric].to_numpy(dtype=np.float64, na_value=np.nan) if numeric else None
    if not strings:
        return num
    # A missing text value (NaN) as the server sends it: the empty string, not "nan"
    cat = rows[strings].astype(object).fillna(MISSING_CATEGORY).astype(str).to_numpy(dtype=object)
    return TabularBatch(num, cat)
