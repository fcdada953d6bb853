"""One registry of converters, looked up by the fitted object's class (most specific first).

Two kinds of converter:
- a *transformer* converter ``(graph, fitted, x: Tensor | Table) -> Tensor`` returns the transformed
  columns as a double tensor;
- an *estimator* converter ``(graph, fitted, x: Tensor) -> Prediction | ClassScores`` returns the
  model's outputs, which ``convert.export_exact`` turns into the graph outputs.
A converter that needs named columns (ColumnTransformer) declares ``takes_table=True``; others get a
single tensor, and the pipeline converter refuses mixed numeric/string input for them with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Table, Tensor


@dataclass(frozen=True, slots=True)
class Prediction:
    """Regression output: a double tensor ``[N, 1]``, or ``[N]`` when ``flat`` (then no ``Reshape``)."""

    values: str
    flat: bool = False


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Classifier output: probabilities ``[N, K]`` (double, columns in ``classes`` order).

    The label is ``classes[argmax]`` of ``decision`` (``[N, K]``, or the probabilities when it is None),
    the first of equal maxima, or the last with ``ties="last"``. Give a decision when the source's labels
    come from raw scores, so that rounding in the probabilities can never flip a label (a binary
    ``raw > 0`` is ``argmax([0, raw])``, ``raw >= 0`` the same with ties="last": ``links``).

    A classifier without ``predict_proba`` (RidgeClassifier, LinearSVC...) has ``probabilities=None``, a
    ``decision`` and its ``scores`` (``decision_function``: ``[N]`` binary, ``[N, K]``): the graph then
    outputs the label and ``decision`` (the scores), and the manifest lists the label only."""

    probabilities: str | None
    classes: list[Any]
    decision: str | None = None
    ties: Literal["first", "last"] = "first"
    scores: str | None = None


@dataclass(frozen=True, slots=True)
class AnomalyScores:
    """Anomaly detector output (IsolationForest): ``score_samples``, ``decision_function`` (double ``[N]``)
    and ``predict`` (int64 ``[N]``, -1 for an outlier, 1 for an inlier)."""

    score: str
    decision: str
    label: str


Converter = Callable[[Graph, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class Entry:
    convert: Converter
    takes_table: bool
    # Optional: where the model splits, per input column of this step (for adversarial parity rows).
    thresholds: Callable[[Any], dict[int, Any]] | None = None


_REGISTRY: dict[type | str, Entry] = {}


def register(*classes: type | str, takes_table: bool = False,
             thresholds: Callable[[Any], dict[int, Any]] | None = None) -> Callable[[Converter], Converter]:
    def add(fn: Converter) -> Converter:
        for cls in classes:
            _REGISTRY[cls] = Entry(fn, takes_table, thresholds)
        return fn

    return add


def lookup(obj: Any) -> Entry:
    """Classes may be registered as types or as "module.QualName" strings (optional libraries such as
    lightgbm and xgboost are then never imported unless the model is theirs)."""
    _load_converters()
    for cls in type(obj).__mro__:
        entry = _REGISTRY.get(cls) or _REGISTRY.get(f"{cls.__module__}.{cls.__qualname__}")
        if entry is not None:
            return entry
    supported = ", ".join(sorted({c if isinstance(c, str) else c.__name__ for c in _REGISTRY}))
    raise ExportError(f"no exact ONNX converter for {type(obj).__name__}; supported: {supported}")


def library(obj: Any) -> str:
    """The library a fitted object comes from: the top-level package of the first class in its MRO that is not
    tabserve's own (a tabserve subclass such as training.estimators' XGBoost classifier is its library's)."""
    for cls in type(obj).__mro__:
        root = cls.__module__.partition(".")[0]
        if root != "tabserve":
            return root
    return "tabserve"


def convert(graph: Graph, obj: Any, x: Tensor | Table) -> Any:
    entry = lookup(obj)
    if isinstance(x, Table) and not entry.takes_table:
        x = single_tensor(x, type(obj).__name__)
    return entry.convert(graph, obj, x)


def single_tensor(table: Table, who: str) -> Tensor:
    if table.numeric is not None and table.categorical is not None:
        raise ExportError(f"{who} gets both numeric and string columns; put a ColumnTransformer first to "
                          "encode the string columns (e.g. OneHotEncoder) and pass the numeric ones through")
    tensor = table.numeric or table.categorical
    assert tensor is not None
    return tensor


_loaded = False


def _load_converters() -> None:
    """Import the converter modules once; each registers itself. Optional libraries are skipped."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in ("pipeline", "columns", "preprocess", "encoders", "linear", "sklearn_trees", "lightgbm", "xgboost",
                   "glm", "linear_classifiers", "elementwise", "normalize", "decomposition", "selection", "polynomial",
                   "discretize", "ordinal", "power", "quantile", "spline", "neural", "bayes", "discriminant", "svm", "neighbors",
                   "voting", "stacking", "target", "bagging", "calibration", "multiclass", "adaboost", "isolation",
                   "catboost"):
        try:
            importlib.import_module(f"tabserve.training.convert.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("tabserve."):
                continue  # converter module not written yet
            raise
