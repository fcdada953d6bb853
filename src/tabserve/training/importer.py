"""From a model trained elsewhere to a verified bundle: load, match to a sample, export, prove parity, write.

``tabserve import`` is ``tabserve train`` without the fit: the model comes from a file (see
``model_file``) and a sample of its input data takes the place of the training data (see ``sample``).
The bundle is the same, written by the same manifest builder; its ``training`` section says where the
model came from (file name, format, SHA-256 of the file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_outlier_detector, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from tabserve.core.bundle import read_bundle, write_bundle
from tabserve.core.manifest import Manifest, Task
from tabserve.core.schema import MISSING_CATEGORY
from tabserve.errors import ExportError, ModelFileError
from tabserve.training import native
from tabserve.training.describe import build_manifest, feature_entries, prediction_quantiles
from tabserve.training.explain_data import build_explain
from tabserve.training.export import export_approximate, export_onnx
from tabserve.training.importance import global_importance
from tabserve.training.metrics import holdout_metrics
from tabserve.training.missing import decide_missing
from tabserve.training.model_file import ModelFile, is_pickle_name, read_model_file, refuse_pickle
from tabserve.training.options import ADVERSARIAL_ROWS, ATOL, RTOL, TASKS, check_name, model_name
from tabserve.training.parity import Parity, check
from tabserve.training.progress import Steps
from tabserve.training.sample import feature_specs, match_features, model_categories, target_values
from tabserve.training.steps import in_user_terms
from tabserve.training.tables import read_table
from tabserve.training.trainer import destination, with_explain

Progress = Callable[[str], None]
_STEPS = 5


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: Path
    manifest: Manifest
    model: Any  # what model.onnx reproduces: the loaded model (a native Booster wrapped by ``native``)
    timings: dict[str, float]  # seconds per step (read, prepare, export, check, write) and total


@dataclass(frozen=True, slots=True)
class Imported:
    """What the model file says about the model."""

    model: Any  # scored and exported: a scikit-learn model, or a Booster wrapped by ``native.wrap``
    task: Task
    classes: list[Any] | None
    names: list[str] | None  # the model's own feature names, None when it knows only positions
    count: int | None  # how many features it takes, when known
    native: bool  # a Booster: numeric features only, each may be missing (every split has a NaN branch)
    description: str  # for the progress line and the manifest, e.g. "lightgbm.Booster (objective binary)"
    spelled: Callable[[str], str] | None = None  # how the model writes a column's name, if not as it is


def import_model(
    model_file: str | os.PathLike[str],
    sample: str | os.PathLike[str],
    *,
    target: str | None = None,
    ignore: Sequence[str] = (),
    task: Task | None = None,
    classes: Sequence[Any] | None = None,
    name: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    trust_pickle: bool = False,
    approximate: bool = False,
    rtol: float = RTOL,
    atol: float = ATOL,
    progress: Progress | None = None,
) -> ImportResult:
    """Import a model file and write a verified bundle to ``dest`` (default ``HOME/models/NAME/N``).

    Native LightGBM (text) and XGBoost (JSON/UBJSON) files load without pickle. A pickled scikit-learn
    model or pipeline needs ``trust_pickle=True``: unpickling runs code from the file; without it the
    file is refused before anything unpickles it (before it is opened, when its name says pickle).
    ``sample`` (CSV/Parquet) names the features, gives their statistics and is the parity check's
    holdout; ``target``, a column of it, adds metrics on its rows; ``ignore`` names other columns of it
    that are not features (an id), left out.
    ``classes`` names a native classifier's classes 0..K-1. ``approximate`` allows, for a model with no exact
    export, skl2onnx's graph (double where it can, else float32): the error measured on the parity rows
    becomes the bundle's stated bound (manifest ``approximation``, every v1 response's ``model_format``);
    a label that differs is still refused. Raises ``ModelFileError``, ``DataError`` or ``ExportError``;
    nothing is written then.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if not (0 <= rtol < np.inf and 0 <= atol < np.inf):
        raise ValueError(f"rtol and atol must be finite numbers >= 0; got rtol={rtol}, atol={atol}")
    source = Path(model_file).expanduser()
    if is_pickle_name(source) and not trust_pickle:  # before anything else looks at the file
        raise refuse_pickle(source)
    name = check_name(name) if name is not None else model_name(source.stem)
    dest_dir, version = destination(name, dest, home, overwrite=overwrite)
    steps = Steps(progress, _STEPS)

    steps.begin("read")
    loaded = read_model_file(source, trust_pickle=trust_pickle)
    steps.say(f"reading {loaded.name} ({loaded.format}, sha256 {loaded.sha256[:12]}...)")
    for note in loaded.warnings:
        steps.say(f"warning while loading {loaded.name}: {note}")
    imported = describe(loaded, task, classes)
    table = read_table(sample)
    steps.say(f"{imported.description}: {_what(imported)}; sample {table.name} "
              f"({len(table.frame)} rows, {table.frame.shape[1]} columns)")

    steps.begin("prepare")
    names, how = match_features(table, imported.names, imported.count, target, spelled=imported.spelled,
                                ignore=ignore)
    steps.say(how)
    # Native categorical features take text: the model's categories in its code order, a missing value
    # (an empty field) routed by the model, an unseen category as the model treats it (``native``).
    native_text = native.categorical_features(imported.model, names)
    categories = {**({} if imported.native else model_categories(imported.model, names)),
                  **{n: (c, "ignore") for n, (c, _) in native_text.items()}}
    as_fitted = {**native.numeric_categories(imported.model, names), **{n: c for n, (c, _) in native_text.items()}}
    imported = replace(imported, model=native.with_categories(imported.model, as_fitted, names))
    if native_text:
        table = replace(table, frame=table.frame.fillna(dict.fromkeys(native_text, MISSING_CATEGORY)))
    X, specs = feature_specs(table, names, numeric_only=imported.native and not native_text,
                             categories=categories)
    specs = decide_missing(imported.model, specs, f"the sample {table.name}")
    specs = [f.model_copy(update={"allow_missing": True, "handle_unknown": native_text[f.name][1]})
             if f.name in native_text else f for f in specs]
    if target is not None and imported.task == "anomaly":
        raise ModelFileError(f"an anomaly detector has no target; leave --target {target} out (or pass "
                             f"--ignore {target} if the sample has that column)")
    y = target_values(table, target, imported.task, imported.classes) if target is not None else None

    steps.begin("export")
    steps.say("exporting to ONNX")
    reason = None
    try:
        exported = export_onnx(imported.model, specs, imported.task)
    except ExportError as exc:
        refusal = in_user_terms(exc, imported.model)
        if not approximate:
            raise ExportError(f"{str(refusal).rstrip('.')}. Or, if answers within a measured error will do, import it with "
                              "--approximate: skl2onnx's graph, its error on the sample and adversarial rows "
                              "recorded in the manifest and in every response's model_format",
                              **refusal.context) from exc
        reason = str(refusal).partition(";")[0]
        steps.say(f"no exact export ({reason}); --approximate: converting with skl2onnx")
        exported = export_approximate(imported.model, specs, imported.task)

    steps.begin("check")
    steps.say(f"checking ONNX against the model on the {len(X)} sample rows and up to {ADVERSARIAL_ROWS} "
              f"adversarial rows (rtol={rtol:g}, atol={atol:g})")
    parity, expected = check(imported.model, exported, specs, X, np.arange(len(X)), rtol=rtol, atol=atol,
                             extremes=reason is not None)
    approximation = None
    if reason is not None:
        parity, approximation = _measured_bound(parity, reason, exported.exporter)
        steps.say(f"approximate export ({exported.exporter}): max abs error {parity.max_abs_diff:.3g}, max rel "
                  f"error {parity.max_rel_diff:.3g} on {parity.rows_checked} rows: the bundle's stated bound")
    parity.require()
    metrics = (holdout_metrics(imported.task, y, expected.values, expected.probabilities, imported.classes)
               if y is not None else {})

    steps.begin("write")
    steps.say(f"writing {dest_dir} with feature importance and explanation data")
    explain = build_explain(imported.model, specs, imported.task, X)
    importance = global_importance(imported.model, _final(imported.model), specs, explain.columns, X, y,
                                   imported.task, checked_on="sample")
    training = {"imported_from": loaded.name, "format": loaded.format, "sha256": loaded.sha256,
                "model": imported.description, "rows_sample": len(X),
                **prediction_quantiles(imported.task, expected.values),
                **({"ignored_columns": list(ignore)} if ignore else {})}
    manifest = build_manifest(
        name=name, version=version, task=imported.task, features=feature_entries(specs, X),
        exported=exported, parity=parity, metrics=metrics, training=training, source=str(source.resolve()),
        classes=imported.classes,
        target={"name": target, "dtype": str(table.frame[target].dtype)} if target is not None else None,
        data={"fingerprint": table.fingerprint, "rows": len(table.frame), "columns": table.frame.shape[1],
              "sample": table.name},
    )
    if approximation is not None:
        manifest["approximation"] = approximation
    with_explain(manifest, explain, importance)
    path = write_bundle(dest_dir, exported.onnx_bytes, manifest, overwrite=overwrite, explain=explain.data,
                        tensor=parity.tensor)
    return ImportResult(path=path, manifest=read_bundle(path).manifest, model=imported.model,
                        timings=steps.finish())


def _measured_bound(parity: Parity, reason: str, exporter: str) -> tuple[Parity, dict[str, Any]]:
    """An approximate export's parity held to the error it was measured with (so that it passes, and a
    server refuses the bundle should that record ever exceed the bound); labels must still agree."""
    if parity.label_mismatches:
        raise ExportError(f"even --approximate cannot serve this model: {exporter}'s graph gives another label "
                          f"than the model on {parity.label_mismatches} of {parity.rows_checked} parity rows "
                          f"(worst: {'; '.join(parity.worst_details[:3])}); nothing was written")
    bound = replace(parity, rtol=parity.max_rel_diff, atol=parity.max_abs_diff, rows_over_tolerance=0)
    return bound, {"max_abs_error": parity.max_abs_diff, "max_rel_error": parity.max_rel_diff,
                   "rows": parity.rows_checked, "reason": reason, "exporter": exporter}


def describe(loaded: ModelFile, task: Task | None, classes: Sequence[Any] | None) -> Imported:
    """The model's task, classes and features, from the model itself; ``task`` and ``classes`` where it
    does not say (``ModelFileError`` where they contradict it)."""
    model = loaded.model
    library = _booster_library(model)
    if library is not None:
        return _describe_booster(model, library, task, classes)
    if not hasattr(model, "predict"):
        raise ModelFileError(f"{loaded.name} holds a {type(model).__name__}, not a fitted model; tabserve "
                             "imports scikit-learn models and pipelines, LightGBM and XGBoost models")
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise ModelFileError(f"{loaded.name} holds an unfitted {type(model).__name__}; fit it first, or "
                             "train with `tabserve train`") from None
    except TypeError:
        pass  # not a scikit-learn estimator: the export says whether it is supported
    if is_outlier_detector(model):
        return _describe_detector(loaded, model, task, classes)
    found: Task | None = ("classification" if is_classifier(model) else
                          "regression" if is_regressor(model) else None)
    if task is not None and found is not None and task != found:
        raise ModelFileError(f"{loaded.name} holds a {found} model ({type(model).__name__}); "
                             f"--task {task} contradicts it: leave --task out")
    task = task or found
    if task is None:
        raise ModelFileError(f"{loaded.name} holds a {type(model).__name__}, which scikit-learn calls "
                             "neither a classifier nor a regressor; say which with --task")
    if classes is not None:
        raise ModelFileError(f"{loaded.name} holds a scikit-learn model, which knows its classes; "
                             "--classes is for native LightGBM/XGBoost classifiers: leave it out")
    own = getattr(model, "classes_", None) if task == "classification" else None
    if task == "classification" and own is None:
        raise ModelFileError(f"{loaded.name} holds a classifier without classes_; cannot name its labels")
    names = getattr(model, "feature_names_in_", None)
    count = getattr(model, "n_features_in_", None)
    return Imported(model, task, None if own is None else [_plain(c) for c in own],
                    None if names is None else [str(n) for n in names], None if count is None else int(count),
                    native=False, description=_steps_of(model), spelled=_spelling(model))


def _describe_detector(loaded: ModelFile, model: Any, task: Task | None, classes: Sequence[Any] | None) -> Imported:
    """An IsolationForest (alone or after preprocessing) is served as an anomaly model: label -1/1, score."""
    detector = type(_final(model)).__name__
    if detector != "IsolationForest":
        raise ModelFileError(f"{loaded.name} holds an anomaly detector ({detector}); tabserve serves regression and "
                             "classification models, and IsolationForest for anomaly scoring: refit the detector "
                             "as an IsolationForest, or serve a classifier trained on labelled anomalies")
    if task is not None:
        raise ModelFileError(f"{loaded.name} holds an anomaly detector (IsolationForest); --task {task} "
                             "contradicts it: leave --task out")
    if classes is not None:
        raise ModelFileError(f"{loaded.name} holds an anomaly detector, whose labels are -1 (outlier) and 1 "
                             "(inlier); --classes is for native LightGBM/XGBoost classifiers: leave it out")
    names = getattr(model, "feature_names_in_", None)
    count = getattr(model, "n_features_in_", None)
    return Imported(model, "anomaly", None, None if names is None else [str(n) for n in names],
                    None if count is None else int(count), native=False, description=_steps_of(model),
                    spelled=_spelling(model))


def _describe_booster(booster: Any, library: native.Library, task: Task | None,
                      classes: Sequence[Any] | None) -> Imported:
    objective = native.objective(booster, library)
    description = f"{library}.{type(booster).__name__} (objective {objective.name})"
    if task is not None and task != objective.task:
        raise ModelFileError(f"the model is a {library} Booster with objective {objective.name!r}, a "
                             f"{objective.task} objective; --task {task} contradicts it: leave --task out")
    labels: list[Any] | None = None
    if objective.classes is not None and classes is not None:
        raise ModelFileError(f"the {library} model names its classes ({', '.join(map(repr, objective.classes))}); "
                             "--classes is for LightGBM/XGBoost Boosters: leave it out")
    if objective.classes is not None:
        labels = list(objective.classes)
    elif objective.task == "classification":
        labels = list(range(objective.n_classes)) if classes is None else list(classes)
        if len(labels) != objective.n_classes or len(set(labels)) != len(labels):
            k = objective.n_classes
            raise ModelFileError(f"the model has {k} classes (objective {objective.name!r}); --classes gives "
                                 f"{len(labels)} label(s), {len(set(labels))} distinct: give {k} distinct "
                                 f"labels, in the order of the classes 0..{k - 1}")
    elif classes is not None:
        raise ModelFileError(f"the model is a regressor (objective {objective.name!r}); --classes is for "
                             "classifiers: leave it out")
    model = native.wrap(booster, library, objective.task, labels)
    return Imported(model, objective.task, labels, native.feature_names(booster, library),
                    native.feature_count(booster, library), native=True, description=description,
                    spelled=native.spelled(library))


def _spelling(model: Any) -> Callable[[str], str] | None:
    """A LightGBM scikit-learn model that takes the rows itself (alone, or a pipeline's first step) knows
    its columns by LightGBM's names for them (spaces written as '_')."""
    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    return native.spelled("lightgbm") if type(first).__module__.startswith("lightgbm.") else None


def _booster_library(model: Any) -> native.Library | None:
    """'lightgbm' or 'xgboost' for their native Booster (not their scikit-learn wrappers); 'catboost' for
    any CatBoost model (its scikit-learn classes too: they lack scikit-learn's feature count)."""
    cls = type(model)
    if cls.__module__.partition(".")[0] == "catboost":
        return "catboost"
    if cls.__name__ == "Booster":
        root = cls.__module__.partition(".")[0]
        if root in ("lightgbm", "xgboost"):
            return root  # type: ignore[return-value]
    return None


def _final(model: Any) -> Any:
    from tabserve.training.explain_data import split_pipeline

    return split_pipeline(model)[1]


def _what(imported: Imported) -> str:
    if imported.task != "classification":
        return imported.task
    shown = imported.classes or []
    return f"classification, classes {', '.join(map(repr, shown[:10]))}{', ...' if len(shown) > 10 else ''}"


def _steps_of(model: Any) -> str:
    if isinstance(model, Pipeline):
        steps = [_steps_of(s) for _, s in model.steps if s is not None and not isinstance(s, str)]
        return f"Pipeline({', '.join(steps)})"
    return type(model).__name__


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
