"""Refusals in the user's terms: which step of their pipeline, as they wrote it, and what to do instead.

The exporter names classes as it registers them (``LinearModel``, ``NativeRegressor``,
``lightgbm.sklearn.LGBMRegressor``); a user knows their own pipeline: ``step 2 'model' (SGDOneClassSVM)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sklearn.pipeline import Pipeline

from tabserve.errors import ExportError

# Registered names a user never wrote, and what they stand for.
_INTERNAL = {
    "LinearModel": "LinearRegression, Ridge, Lasso, ElasticNet (and other linear regressors)",
    "NativeRegressor": "",
    "NativeClassifier": "",
    "CategoricalRegressor": "",
    "CategoricalClassifier": "",
    "Booster": "native LightGBM/XGBoost models",
}
_WRAPPERS = re.compile(r"\b(Native|Categorical)(Regressor|Classifier)\b")
_UNSUPPORTED = re.compile(r"no exact ONNX converter for (?P<cls>[A-Za-z_][\w.]*); supported: (?P<names>.*)$",
                          re.DOTALL)


def name_step(model: Any, cls: str) -> str:
    """Where the first object of class ``cls`` sits in ``model``: "step 2 'model' (SGDOneClassSVM)", a path
    into nested pipelines ("step 1 'columns' (ColumnTransformer) > part 'text' (TfidfVectorizer)"), or
    "the model (SGDOneClassSVM)" when it is the model itself."""
    for path in _walk(model, ()):
        if path[-1][2] == cls:
            return " > ".join(_label(kind, key, name) for kind, key, name in path)
    return f"the model ({cls})"


def in_user_terms(exc: ExportError, model: Any) -> ExportError:
    """An unsupported-class refusal rewritten: the step, the supported classes by their public names, and
    what to do. Another refusal that starts with a class of the user's pipeline gets that step's place in
    front; the wrappers of native models are called what the user loaded."""
    found = _UNSUPPORTED.search(str(exc))
    if found is None:
        return _located(exc, model)
    cls = found["cls"].rpartition(".")[2]
    supported = sorted({_public(n) for n in found["names"].split(", ")} - {""})
    return ExportError(f"{name_step(model, cls)} has no exact ONNX export, so the bundle could not reproduce "
                       f"it; replace it with a supported step, or train the model with `tabserve train`. "
                       f"Supported: {', '.join(supported)}")


def _located(exc: ExportError, model: Any) -> ExportError:
    text = _WRAPPERS.sub("the LightGBM/XGBoost model", str(exc))
    first = re.match(r"[A-Z]\w*", text)
    if first is not None:
        where = name_step(model, first[0])
        if not where.startswith("the model"):  # a step of a pipeline: say which
            text = f"{where}: {text}"
    return exc if text == str(exc) else ExportError(text, **exc.context)


def _walk(obj: Any, path: tuple[tuple[str, Any, str], ...]) -> Iterator[tuple[tuple[str, Any, str], ...]]:
    if not path:
        yield (("model", None, type(obj).__name__),)
    if isinstance(obj, Pipeline):
        for i, (key, step) in enumerate(obj.steps, start=1):
            here = (*path, ("step", (i, key), type(step).__name__))
            yield here
            yield from _walk(step, here)
    for key, part, _ in getattr(obj, "transformers_", getattr(obj, "transformers", [])) or []:
        if not isinstance(part, str):
            here = (*path, ("part", key, type(part).__name__))
            yield here
            yield from _walk(part, here)


def _label(kind: str, key: Any, name: str) -> str:
    if kind == "step":
        return f"step {key[0]} {key[1]!r} ({name})"
    if kind == "part":
        return f"part {key!r} ({name})"
    return f"the model ({name})"


def _public(name: str) -> str:
    short = name.rpartition(".")[2]
    return _INTERNAL.get(short, short)
