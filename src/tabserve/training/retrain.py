"""Retrain a registered model on new data, compare challenger and champion on the same rows, promote if
better.

The champion (``models:/NAME@ALIAS``) is fetched as a bundle (no pickle) and its manifest gives the recipe:
target, task, estimator, features, seed, test size, unknown-category policy, parity tolerances. The
challenger is trained on the new data with that recipe; both are scored from their ONNX bundles on the same
rows, the challenger's holdout of the new data or a fixed evaluation file. The challenger is always
registered; the alias moves to it only if the chosen metric improves by at least ``min_improvement``. The
decision, both scores and the evaluation rows' fingerprint are recorded on the challenger's run and version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tabserve.core.bundle import read_bundle
from tabserve.core.manifest import Manifest
from tabserve.core.model import load
from tabserve.errors import ModelNotFound, TabserveError
from tabserve.registry import ResolvedVersion
from tabserve.registry.mlflow import MlflowSource
from tabserve.settings import default_home
from tabserve.training.data import prepare, split
from tabserve.training.estimators import handles_missing
from tabserve.training.options import RTOL, SEED, TEST_SIZE
from tabserve.training.publish import register_bundle
from tabserve.training.tables import read_table
from tabserve.training.trainer import train_file

# metric -> higher is better; the first of each task is its default
METRICS: dict[str, dict[str, bool]] = {
    "regression": {"r2": True, "rmse": False, "mae": False},
    "classification": {"accuracy": True, "log_loss": False, "roc_auc": True, "f1": True},
}
TAG = "tabserve.retrain."


@dataclass(frozen=True, slots=True)
class Evaluation:
    rows: int
    fingerprint: str  # sha256 of the evaluation rows (features and target)
    source: str  # e.g. "holdout of new.csv (20%, seed 42)" or the evaluation file's name


@dataclass(frozen=True, slots=True)
class RetrainResult:
    name: str
    alias: str
    champion: ResolvedVersion
    challenger: ResolvedVersion
    metric: str
    higher_is_better: bool
    min_improvement: float
    improvement: float  # in the better direction: > 0 means the challenger is better
    promoted: bool
    evaluation: Evaluation
    champion_scores: dict[str, float] = field(default_factory=dict)
    challenger_scores: dict[str, float] = field(default_factory=dict)


def retrain(
    name: str,
    data: str | os.PathLike[str] | None,
    *,
    alias: str = "champion",
    metric: str | None = None,
    min_improvement: float = 0.0,
    eval_data: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    from_log: str | os.PathLike[str] | None = None,
    since: dt.datetime | None = None,
) -> RetrainResult:
    """Retrain ``models:/NAME@ALIAS`` on ``data``, on the labelled traffic of the payload log ``from_log``
    (predictions since ``since`` joined with their feedback), or on both; see the module docstring. Raises a
    ``TabserveError`` when it cannot run (no such alias, a champion without a training recipe, unusable data,
    registry down)."""
    if data is None and from_log is None:
        raise TabserveError("nothing to train on: give the new data, the payload log (--from-log), or both")
    if not (0 <= min_improvement < math.inf):
        raise TabserveError(f"the minimum improvement must be a finite number >= 0; got {min_improvement}")
    say = progress or (lambda _line: None)
    root = Path(home if home is not None else default_home()).expanduser()
    source = MlflowSource(f"models:/{name}@{alias}", home=root)
    champion = source.resolve()
    champion_dir = source.fetch(champion)
    manifest = read_bundle(champion_dir).manifest
    recipe = training_recipe(manifest, name, champion.version)
    metric = metric or next(iter(METRICS[manifest.task]))
    if metric not in METRICS[manifest.task]:
        raise TabserveError(f"metric {metric!r} does not apply to a {manifest.task} model; choose one of "
                            f"{', '.join(METRICS[manifest.task])}")
    higher = METRICS[manifest.task][metric]
    say(f"champion: {name} version {champion.version} ({alias}), {manifest.task}, {recipe['estimator']} on "
        f"{len(recipe['features'])} features")
    with tempfile.TemporaryDirectory(prefix="tabserve-retrain-") as tmp:
        window_tags: dict[str, str] = {}
        data_source = str(Path(data).expanduser().resolve()) if data is not None else ""
        if from_log is not None:  # the log's labelled rows (+ data) become one table, trained on as a file
            data, data_source, window_tags = _traffic_table(name, manifest, from_log, since, data, Path(tmp), say)
        assert data is not None
        dest = Path(tmp) / _next_version(name, root)
        started = time.perf_counter()
        challenger = train_file(data, dest=dest, progress=progress, **recipe)
        trained_s = time.perf_counter() - started
        X, y, evaluation = _evaluation_rows(manifest, recipe, data, eval_data)
        say(f"evaluating both on {evaluation.rows} rows: {evaluation.source}")
        champion_scores = _scores(champion_dir, manifest, X, y, f"champion version {champion.version}")
        challenger_scores = _scores(challenger.path, manifest, X, y, "the challenger")
        if metric not in champion_scores or metric not in challenger_scores:
            raise TabserveError(f"{metric} is undefined on the {evaluation.rows} evaluation rows (e.g. a "
                                f"single class); choose another --metric or other evaluation rows")
        delta = challenger_scores[metric] - champion_scores[metric]
        improvement = delta if higher else -delta
        promoted = improvement > 0 and improvement >= min_improvement
        decision = _decision(promoted, metric, improvement, min_improvement, champion.version)
        recorded = {f"eval.champion.{k}": v for k, v in champion_scores.items()}
        recorded |= {f"eval.challenger.{k}": v for k, v in challenger_scores.items()}
        recorded |= {"eval.rows": float(evaluation.rows), "eval.improvement": improvement}
        tags = {f"{TAG}decision": "promoted" if promoted else "kept_champion", f"{TAG}reason": decision,
                f"{TAG}metric": metric, f"{TAG}higher_is_better": str(higher).lower(),
                f"{TAG}min_improvement": repr(min_improvement), f"{TAG}champion_version": champion.version,
                f"{TAG}alias": alias, f"{TAG}eval_fingerprint": evaluation.fingerprint,
                f"{TAG}eval_source": evaluation.source, **window_tags}
        registered = register_bundle(challenger.path, name, alias=alias if promoted else None, home=root,
                                     metrics=recorded, tags=tags, dataset=read_table(data).frame,
                                     dataset_source=data_source, training_seconds=trained_s)
    return RetrainResult(name=name, alias=alias, champion=champion, challenger=registered, metric=metric,
                         higher_is_better=higher, min_improvement=min_improvement, improvement=improvement,
                         promoted=promoted, evaluation=evaluation, champion_scores=champion_scores,
                         challenger_scores=challenger_scores)


def _traffic_table(name: str, manifest: Manifest, log_dir: str | os.PathLike[str], since: dt.datetime | None,
                   data: str | os.PathLike[str] | None, tmp: Path, say: Callable[[str], None]
                   ) -> tuple[Path, str, dict[str, str]]:
    """One Parquet file of the log's labelled rows of NAME (and ``data``'s rows), what MLflow records as its
    source, and the tags that say which window of the log it holds."""
    from tabserve.loop.dataset import traffic_frame

    frame, window = traffic_frame(log_dir, name, manifest, since)
    say(f"payload log {window.log_dir}: {window.rows} labelled predictions of {name}"
        + (f" from {window.first} to {window.last}" if window.rows else "")
        + (f" (since {window.since})" if window.since else ""))
    source = f"{window.log_dir}/{name} (payload log{', since ' + window.since if window.since else ''})"
    tags = window.tags(TAG)
    if data is not None:
        original = read_table(data).frame
        columns = [c for c in [*manifest.feature_names, manifest.target.name] if c in original.columns]  # type: ignore[union-attr]
        frame = pd.concat([original[columns], frame], ignore_index=True)
        source += f" + {Path(data).expanduser().resolve()}"
        tags[f"{TAG}data_rows"] = str(len(original))
    if not len(frame):
        raise TabserveError(f"no labelled predictions of {name} in the payload log {window.log_dir}"
                            f"{' since ' + window.since if window.since else ''}: send feedback "
                            f"(POST /api/v1/feedback) first, or add --data")
    path = tmp / f"{name}-traffic.parquet"
    frame.to_parquet(path, index=False)
    return path, source, tags


def training_recipe(manifest: Manifest, name: str, version: str) -> dict[str, Any]:
    """``train_file``'s arguments that reproduce the champion's training on other data."""
    training = manifest.training
    if "estimator" not in training or manifest.target is None:
        origin = training.get("imported_from") or training.get("model") or "elsewhere"
        raise TabserveError(f"{name} version {version} was not trained by `tabserve train` (it was imported "
                            f"from {origin}): it records no recipe to retrain it with; train a new model "
                            f"with `tabserve train DATA --target COLUMN --register {name}`")
    categorical = manifest.features_of("categorical")
    return {
        "target": manifest.target.name,
        "task": manifest.task,
        "estimator": training["estimator"],
        "features": manifest.feature_names,
        "name": manifest.name,
        "seed": int(training.get("seed", SEED)),
        "test_size": float(training.get("test_size", TEST_SIZE)),
        "unknown_category": (categorical[0].handle_unknown or "error") if categorical else "error",
        "rtol": manifest.parity.rtol if manifest.parity is not None else RTOL,
        **({"atol": manifest.parity.atol} if manifest.parity is not None else {}),
    }


def fingerprint(X: pd.DataFrame, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(",".join(map(str, X.columns)).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(pd.Series(y), index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _evaluation_rows(manifest: Manifest, recipe: dict[str, Any], data: str | os.PathLike[str],
                     eval_data: str | os.PathLike[str] | None) -> tuple[pd.DataFrame, np.ndarray, Evaluation]:
    missing = handles_missing(recipe["estimator"], manifest.task)
    if eval_data is not None:
        table = read_table(eval_data)
        rows = prepare(table, recipe["target"], recipe["features"], manifest.task, missing=missing,
                       unknown_category=recipe["unknown_category"])
        return rows.X, rows.target.values, Evaluation(len(rows.X), fingerprint(rows.X, rows.target.values),
                                                      f"{table.name} (every row)")
    # The challenger's own holdout: the same read, checks and split as train_file made.
    table = read_table(data)
    rows = prepare(table, recipe["target"], recipe["features"], manifest.task, missing=missing,
                   unknown_category=recipe["unknown_category"])
    parts = split(rows, recipe["test_size"], recipe["seed"])
    where = f"holdout of {table.name} ({recipe['test_size']:g} of the rows, seed {recipe['seed']})"
    return parts.X_holdout, parts.y_holdout, Evaluation(len(parts.y_holdout),
                                                        fingerprint(parts.X_holdout, parts.y_holdout), where)


def _scores(bundle: Path, manifest: Manifest, X: pd.DataFrame, y: np.ndarray, who: str) -> dict[str, float]:
    try:
        model = load(bundle)
        predicted = model.predict(X)
        proba = model.predict_proba(X) if manifest.task == "classification" else None
    except TabserveError as exc:
        raise TabserveError(f"{who} cannot score the evaluation rows: {exc}") from exc
    return score(manifest.task, y, predicted, proba, model.classes)


def score(task: str, y: np.ndarray, predicted: np.ndarray, proba: np.ndarray | None,
          classes: list[Any] | None) -> dict[str, float]:
    """Every metric of ``METRICS[task]`` that is defined on these rows."""
    if task == "regression":
        truth, values = np.asarray(y, dtype=np.float64), np.asarray(predicted, dtype=np.float64).reshape(-1)
        found = {"r2": skm.r2_score(truth, values), "rmse": math.sqrt(skm.mean_squared_error(truth, values)),
                 "mae": skm.mean_absolute_error(truth, values)}
        return {k: float(v) for k, v in found.items() if math.isfinite(v)}
    labels = [str(c) for c in classes or []]
    truth = np.array([str(v) for v in y])
    guessed = np.array([str(v) for v in np.asarray(predicted).reshape(-1)])
    unknown = sorted(set(truth.tolist()) - set(labels))
    if unknown:
        raise TabserveError(f"the evaluation rows hold class(es) {', '.join(map(repr, unknown))} that the "
                            f"model does not know (its classes: {', '.join(labels)})")
    binary = len(labels) == 2
    f1 = (skm.f1_score(truth, guessed, average="binary", pos_label=labels[1]) if binary else
          skm.f1_score(truth, guessed, average="macro", labels=labels))
    found = {"accuracy": skm.accuracy_score(truth, guessed), "f1": f1}
    if proba is not None:
        # by hand: scikit-learn's log_loss orders the columns alphabetically, not as the model's classes
        picked = proba[np.arange(len(truth)), [labels.index(t) for t in truth]]
        found["log_loss"] = float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))
        with contextlib.suppress(ValueError):  # undefined when the rows lack a class
            found["roc_auc"] = (skm.roc_auc_score(truth == labels[1], proba[:, 1]) if binary else
                                skm.roc_auc_score(truth, proba, multi_class="ovr", labels=labels))
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def _decision(promoted: bool, metric: str, improvement: float, margin: float, champion: str) -> str:
    change = f"{metric} {'improved' if promoted else 'changed'} by {improvement:+.4g}"
    if promoted:
        return f"{change} (>= {margin:g}): the challenger replaces version {champion}"
    return f"{change} (needs > 0 and >= {margin:g}): version {champion} stays"


def _next_version(name: str, home: Path) -> str:
    """The challenger bundle's manifest version: one past the registry's latest (the registry assigns its own
    number; this only keeps the two alike when nobody registers in between)."""
    try:
        return str(int(MlflowSource(f"models:/{name}", home=home).resolve().version) + 1)
    except (ModelNotFound, ValueError):
        return "1"
