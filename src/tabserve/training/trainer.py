"""From data to a verified bundle: read, check, split, fit, export, prove parity, write."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from tabserve.core.bundle import next_version, read_bundle, write_bundle
from tabserve.core.manifest import Manifest, Task
from tabserve.errors import BundleError, OptionError
from tabserve.settings import DEMO_MODEL_NAME, default_home
from tabserve.training import auto, demo
from tabserve.training.data import Dataset, Split, UnknownPolicy, prepare, split
from tabserve.training.describe import build_manifest, feature_entries, prediction_quantiles
from tabserve.training.estimators import (
    MISSING_IMPUTER,
    MISSING_TEXT_CATEGORY,
    final_estimator,
    fit_input,
    handles_missing,
    make_pipeline,
    needs_imputer,
    simple_params,
)
from tabserve.training.explain_data import build_explain
from tabserve.training.export import export_onnx
from tabserve.training.importance import global_importance
from tabserve.training.metrics import holdout_metrics
from tabserve.training.missing import decide_missing
from tabserve.training.options import (
    ADVERSARIAL_ROWS,
    ATOL,
    AUTO,
    DEFAULT_ESTIMATOR,
    RTOL,
    SEED,
    TEST_SIZE,
    UNKNOWN_CATEGORY,
    check_name,
    check_options,
    model_name,
)
from tabserve.training.parity import check
from tabserve.training.progress import Steps
from tabserve.training.rows import row_list
from tabserve.training.tables import read_table

Progress = Callable[[str], None]
_STEPS = 6


@dataclass(frozen=True, slots=True)
class TrainResult:
    path: Path
    manifest: Manifest
    pipeline: Pipeline  # the fitted scikit-learn pipeline that model.onnx reproduces
    timings: dict[str, float]  # seconds per step (read, prepare, fit, export, check, write) and total


def train_file(
    path: str | os.PathLike[str],
    target: str,
    *,
    task: Task | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    features: Sequence[str] | None = None,
    name: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    test_size: float = TEST_SIZE,
    seed: int = SEED,
    rtol: float = RTOL,
    atol: float = ATOL,
    unknown_category: UnknownPolicy = "error",
    overwrite: bool = False,
    progress: Progress | None = None,
    params: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a model on a CSV/Parquet file and write a bundle to ``dest`` (default ``HOME/models/NAME/N``).

    Text columns are one-hot encoded (an unseen category is refused, or encoded as none with
    ``unknown_category="ignore"``); numeric ones scaled. ``params`` override the estimator's parameters,
    e.g. ``{"n_estimators": 20}``. Raises ``DataError`` for unusable data and ``ExportError`` when the
    ONNX graph misses the tolerance; either way nothing is written.
    """
    check_options(estimator, test_size, rtol, atol)
    if estimator == AUTO and params:
        raise OptionError("--param sets one estimator's hyper-parameters; --estimator auto compares the families "
                          "with their defaults: choose the --estimator whose parameters you set")
    if unknown_category not in UNKNOWN_CATEGORY:
        raise ValueError(f"unknown_category must be one of {', '.join(UNKNOWN_CATEGORY)}; "
                         f"got {unknown_category!r}")
    source = Path(path).expanduser()
    name = check_name(name) if name is not None else model_name(source.stem)
    dest_dir, version = destination(name, dest, home, overwrite=overwrite)
    steps = Steps(progress, _STEPS)

    steps.begin("read")
    table = read_table(source)
    steps.say(f"reading {table.name} ({len(table.frame)} rows, {table.frame.shape[1]} columns)")
    steps.begin("prepare")
    # Regressor and classifier of a family take missing values alike.
    data = prepare(table, target, features, task, missing=handles_missing(estimator, task or "regression"),
                   unknown_category=unknown_category)
    if data.dropped is not None and len(data.dropped):
        steps.say(f"dropped {len(data.dropped)} row(s) without a target value (rows {row_list(data.dropped)})")
    parts = split(data, test_size, seed)
    steps.say(_describe_split(data, parts))
    categorical = {f.name: f.categories or [] for f in data.specs if f.kind == "categorical"}
    missing_text = [f.name for f in data.specs if f.kind == "categorical" and f.allow_missing]

    def imputes(family: str) -> bool:
        return any(f.allow_missing for f in data.specs if f.kind == "numeric") and needs_imputer(
            family, data.target.task)

    def build(family: str) -> Pipeline:
        return make_pipeline(family, data.target.task, seed, params, categorical=categorical,
                             numeric=data.names("numeric"), unknown_category=unknown_category,
                             impute=imputes(family), missing_text=missing_text)

    chosen: dict[str, Any] = {}
    if estimator == AUTO:
        compared = auto.families()
        steps.say(f"auto: comparing {', '.join(compared)} on the {len(parts.y_train)} training rows")
        choice = auto.choose(build, fit_input(parts.X_train), parts.y_train, data.target.task, seed, steps.say,
                             compared)
        steps.say(f"auto: chose {choice.estimator} ({choice.metric}={choice.scores[choice.estimator]:.4f}; "
                  f"compared in {choice.seconds:.1f} s)")
        estimator = choice.estimator
        chosen = {"auto": choice.scores, "auto_metric": choice.describe()}
    impute = imputes(estimator)
    pipeline = build(estimator)
    training = {"estimator": estimator, "seed": seed, "test_size": test_size, "source": table.name, **chosen,
                **({"params_set": dict(params)} if params else {}),
                **({"missing": MISSING_IMPUTER} if impute else {}),
                **({"missing_text": MISSING_TEXT_CATEGORY} if missing_text else {}),
                **({"rows_without_target": len(data.dropped)} if data.dropped is not None and len(data.dropped)
                   else {})}
    return _fit_and_write(data, parts, pipeline, training, name, version, dest_dir, rtol=rtol, atol=atol,
                          overwrite=overwrite, steps=steps, source=str(source.resolve()))


def train_demo(
    dest: str | os.PathLike[str] | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Train the demo model (a few seconds, deterministic) and return its bundle folder."""
    dest_dir, version = destination(DEMO_MODEL_NAME, dest, home, overwrite=overwrite)
    steps = Steps(progress, _STEPS)
    steps.begin("read")
    data = demo.demo_dataset()
    steps.say(f"generating demo data: {demo.SOURCE}")
    steps.begin("prepare")
    test_size, seed = TEST_SIZE, demo.SEED
    parts = split(data, test_size, seed)
    steps.say(_describe_split(data, parts))
    training = {"estimator": "random_forest", "seed": seed, "test_size": test_size, "source": demo.SOURCE}
    result = _fit_and_write(data, parts, demo.demo_pipeline(), training, DEMO_MODEL_NAME, version, dest_dir,
                            rtol=RTOL, atol=ATOL, overwrite=overwrite, steps=steps,
                            source=f"demo: {demo.SOURCE}")
    return result.path


def _fit_and_write(data: Dataset, parts: Split, pipeline: Pipeline, training: dict[str, Any], name: str,
                   version: str, dest: Path, *, rtol: float, atol: float, overwrite: bool, steps: Steps,
                   source: str) -> TrainResult:
    task = data.target.task
    steps.begin("fit")
    steps.say(f"fitting {' + '.join(type(s).__name__ for _, s in pipeline.steps)} "
              f"on {len(parts.y_train)} rows")
    pipeline.fit(fit_input(parts.X_train), parts.y_train)
    # Which features take a missing value follows from the fitted pipeline (the data says which held some).
    data = replace(data, specs=decide_missing(pipeline, data.specs, data.source))

    steps.begin("export")
    steps.say("exporting to ONNX")
    exported = export_onnx(pipeline, data.specs, task)

    steps.begin("check")
    steps.say(f"checking ONNX against scikit-learn on {len(parts.y_holdout)} holdout rows and up to "
              f"{ADVERSARIAL_ROWS} adversarial rows (rtol={rtol:g}, atol={atol:g})")
    parity, expected = check(pipeline, exported, data.specs, parts.X_holdout, parts.holdout_ids, rtol=rtol,
                             atol=atol)
    parity.require()
    metrics = holdout_metrics(task, parts.y_holdout, expected.values, expected.probabilities,
                              data.target.classes)

    steps.begin("write")
    steps.say(f"writing {dest} with feature importance (permutation on the holdout) and explanation data")
    explain = build_explain(pipeline, data.specs, task, parts.X_train)
    importance = global_importance(pipeline, final_estimator(pipeline), data.specs, explain.columns,
                                   parts.X_holdout, parts.y_holdout, task, seed=training.get("seed", 0) or 0)
    training = {**training, "params": simple_params(final_estimator(pipeline)),
                "model": type(final_estimator(pipeline)).__name__,
                "rows_train": len(parts.y_train), "rows_holdout": len(parts.y_holdout),
                **prediction_quantiles(task, expected.values)}
    target = data.target
    manifest = build_manifest(
        name=name, version=version, task=task, features=feature_entries(data.specs, parts.X_train),
        exported=exported, parity=parity, metrics=metrics, training=training, source=source,
        classes=target.classes, target={"name": target.name, "dtype": target.dtype},
        data={"fingerprint": data.fingerprint, "rows": data.rows, "columns": data.columns},
    )
    with_explain(manifest, explain, importance)
    path = write_bundle(dest, exported.onnx_bytes, manifest, overwrite=overwrite, explain=explain.data,
                        tensor=parity.tensor)
    return TrainResult(path=path, manifest=read_bundle(path).manifest, pipeline=pipeline,
                       timings=steps.finish())


def with_explain(manifest: dict[str, Any], explain: Any, importance: dict[str, Any]) -> None:
    """Add the importance and the explain section (or why there is none) to a manifest being built."""
    manifest["importance"] = importance
    if explain.manifest is not None:
        manifest["explain"] = explain.manifest
    else:
        manifest["training"] = {**manifest["training"], "explain_unavailable": explain.reason}


def destination(name: str, dest: str | os.PathLike[str] | None, home: str | os.PathLike[str] | None,
                *, overwrite: bool = False) -> tuple[Path, str]:
    """The bundle folder and its version.

    Default: ``HOME/models/NAME/N`` with N the next integer. An explicit ``dest`` is used as it is; its
    version is its folder name when that is an integer, else ``"1"``.
    """
    if dest is not None:
        folder = Path(dest).expanduser()
        version = folder.name if folder.name.isdigit() else "1"
    else:
        model_dir = Path(home if home is not None else default_home()).expanduser() / "models" / name
        version = next_version(model_dir)
        folder = model_dir / version
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} already exists; choose another folder (--out) "
                          "or replace it (--overwrite)", path=str(folder))
    return folder, version


def _describe_split(data: Dataset, parts: Split) -> str:
    return (f"{data.target.task}: {data.target.reason}; {len(data.features)} features, "
            f"{len(parts.y_train)} training rows, {len(parts.y_holdout)} holdout rows")
