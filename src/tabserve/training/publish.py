"""Publish a bundle to the MLflow model registry: one run (parameters, metrics, parity, signature, the bundle
as artifacts) and one registered model version, optionally under an alias.

A version's artifacts are an MLflow model folder, ``MLmodel`` (flavor ``tabserve``, the signature) next to
``bundle/`` (``tabserve.json`` + ``model.onnx`` exactly as written), so the MLflow UI shows the signature and
``tabserve.registry.mlflow.MlflowSource.fetch`` downloads ``bundle/`` alone. Needs ``tabserve[mlflow]``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabserve.core.bundle import read_bundle
from tabserve.core.manifest import Manifest
from tabserve.errors import ConfigError
from tabserve.registry import ResolvedVersion
from tabserve.registry.mlflow import (
    BUNDLE_PATH,
    TAG_SHA256,
    artifact_root,
    client,
    registry_errors,
    version_tags,
)
from tabserve.registry.mlflow import (
    tracking_uri as default_tracking_uri,
)
from tabserve.settings import default_home

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature

__all__ = ["MODEL_PATH", "input_example", "register_bundle", "signature"]

MODEL_PATH = "model"  # the MLflow model folder inside the run's artifacts; the bundle is MODEL_PATH/bundle
_MAX_PARAM = 6000  # MLflow's limit on a parameter's value
_BATCH = 100  # MLflow's limit on parameters (and tags) per log_batch call


def register_bundle(
    bundle_dir: str | os.PathLike[str],
    name: str,
    *,
    alias: str | None = None,
    home: str | os.PathLike[str] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    dataset: pd.DataFrame | None = None,
    dataset_source: str | None = None,
    training_seconds: float | None = None,
) -> ResolvedVersion:
    """Log ``bundle_dir`` as a run of ``experiment`` (default: ``name``) and register it as a new version of
    model ``name``; ``alias`` (e.g. ``champion``) is moved to it when given.

    ``metrics`` and ``tags`` are recorded on the run besides the bundle's own, and the tags on the version
    too. ``dataset`` (the training frame, read from ``dataset_source``) is logged as the run's training input;
    ``training_seconds`` (else the manifest's ``training.fit_seconds``) as the metric ``training_seconds``.
    The registry is ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite under ``HOME/mlflow``.
    Raises ``BundleError`` for an invalid bundle (nothing is logged) and ``ConfigError`` when the registry
    cannot be used.
    """
    bundle = read_bundle(bundle_dir)  # only verified bundles are published
    manifest = bundle.manifest
    root = Path(home if home is not None else default_home()).expanduser()
    uri = tracking_uri or default_tracking_uri(root)
    mlflow = client(uri)
    extra_tags = {k: str(v) for k, v in (tags or {}).items()}
    with registry_errors(uri):
        artifacts = artifact_root(root) if not tracking_uri else None
        experiment_id = _experiment(mlflow, experiment or name, artifacts)
        run = mlflow.create_run(experiment_id, run_name=f"{manifest.name} {manifest.version}",
                                tags={"tabserve.model": name, **_run_tags(manifest), **extra_tags})
        run_id = run.info.run_id
        try:
            _log(mlflow, run_id, _params(manifest),
                 {**_metrics(manifest, training_seconds), **(metrics or {})})
            if dataset is not None:
                _log_dataset(mlflow, run_id, dataset, dataset_source, manifest)
            with tempfile.TemporaryDirectory(prefix="tabserve-mlmodel-") as tmp:
                mlflow.log_artifacts(run_id, str(_mlmodel(manifest, run_id, Path(tmp))), MODEL_PATH)
            mlflow.log_artifacts(run_id, str(bundle.path), f"{MODEL_PATH}/{BUNDLE_PATH}")
        except BaseException:
            mlflow.set_terminated(run_id, "FAILED")
            raise
        mlflow.set_terminated(run_id)
        _ensure_model(mlflow, name)
        version = mlflow.create_model_version(
            name, source=f"{run.info.artifact_uri.rstrip('/')}/{MODEL_PATH}", run_id=run_id,
            tags={**version_tags(manifest.model.sha256, manifest.version), **extra_tags},
            description=_description(manifest),
        )
        number = str(version.version)
        if alias is not None:
            mlflow.set_registered_model_alias(name, alias, number)
    return ResolvedVersion(uri=f"models:/{name}/{number}", name=name, version=number, alias=alias)


def signature(manifest: Manifest) -> ModelSignature:
    """Inputs as named columns (numbers as double, categories as string); outputs as the ONNX tensors; a
    classifier with probabilities takes the pyfunc parameter ``output`` ("predictions" or "probabilities")."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    from tabserve.registry.pyfunc import OUTPUT_LABELS, OUTPUT_PARAM

    inputs = Schema([ColSpec("string" if f.kind == "categorical" else "double", f.name)
                     for f in manifest.features])
    outputs = Schema([
        TensorSpec(np.dtype(object) if o.dtype in ("str", "string", "object") else np.dtype(o.dtype),
                   tuple(-1 if d is None else d for d in o.shape), o.name)
        for o in manifest.outputs
    ])
    params = (ParamSchema([ParamSpec(OUTPUT_PARAM, "string", OUTPUT_LABELS)])
              if any(o.role == "probabilities" for o in manifest.outputs) else None)
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _experiment(mlflow: MlflowClient, name: str, artifacts: Path | None) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise ConfigError(f"the MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                              "restore) or delete it for good (mlflow gc) before registering")
        return str(found.experiment_id)
    # The embedded store keeps artifacts under HOME/mlflow/artifacts, not MLflow's default ./mlruns of
    # whatever folder the command ran in; a server (MLFLOW_TRACKING_URI) chooses its own.
    location = str(artifacts / name) if artifacts is not None else None
    return str(mlflow.create_experiment(name, artifact_location=location))


def _ensure_model(mlflow: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlflow.create_registered_model(name, tags={"tabserve": "bundle"},
                                       description="tabserve bundles: model.onnx + tabserve.json")


def _params(manifest: Manifest) -> dict[str, str]:
    params: dict[str, Any] = {"task": manifest.task, "features": ",".join(manifest.feature_names),
                              "n_features": len(manifest.features)}
    if manifest.target is not None:
        params["target"] = manifest.target.name
    if manifest.classes:
        params["classes"] = ",".join(map(str, manifest.classes))
    for key, value in manifest.training.items():
        if isinstance(value, Mapping):
            params.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (Mapping, list))})
        elif value is not None:
            params[key] = ",".join(map(str, value)) if isinstance(value, list) else value
    return {k[:250]: _clip(str(v)) for k, v in params.items() if v is not None}


def _metrics(manifest: Manifest, training_seconds: float | None = None) -> dict[str, float]:
    metrics = {("holdout_rows" if k == "rows" else k): float(v) for k, v in manifest.metrics.items()}
    seconds = training_seconds if training_seconds is not None else manifest.training.get("fit_seconds")
    if isinstance(seconds, (int, float)):
        metrics["training_seconds"] = float(seconds)
    parity = manifest.parity
    if parity is not None:
        metrics.update({"parity.max_abs_diff": parity.max_abs_diff,
                        "parity.max_rel_diff": parity.max_rel_diff,
                        "parity.rows_checked": float(parity.rows_checked),
                        "parity.label_mismatches": float(parity.label_mismatches)})
    return metrics


def _run_tags(manifest: Manifest) -> dict[str, str]:
    tags = {TAG_SHA256: manifest.model.sha256, "tabserve.manifest_name": manifest.name,
            "tabserve.manifest_version": manifest.version, "tabserve.task": manifest.task,
            "mlflow.source.name": str(manifest.lineage.source or "tabserve")[:500]}
    if manifest.parity is not None:
        tags["parity.passed"] = str(manifest.parity.passed).lower()
        tags["parity.checked_on"] = manifest.parity.checked_on
    fingerprint = manifest.lineage.data.get("fingerprint")
    if fingerprint:
        tags["tabserve.data_fingerprint"] = str(fingerprint)
    return tags


def _log(mlflow: MlflowClient, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    for chunk in _chunks([Param(k, v) for k, v in params.items()]):
        mlflow.log_batch(run_id, params=chunk)
    for chunk in _chunks([Metric(k, float(v), now, 0) for k, v in metrics.items()]):
        mlflow.log_batch(run_id, metrics=chunk)


def _mlmodel(manifest: Manifest, run_id: str, folder: Path) -> Path:
    """The MLflow model folder around ``bundle/`` (logged beside it): ``MLmodel`` with three flavors over the
    same files (``tabserve``; ``python_function``, which ``tabserve.registry.pyfunc`` loads, so that
    ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work; ``onnx``, for ``mlflow.onnx.load_model``),
    the signature, an input example and the pip requirements of the pyfunc."""
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    import tabserve

    flavor = {"bundle": BUNDLE_PATH, "manifest_format_version": manifest.format_version,
              "task": manifest.task, "sha256": manifest.model.sha256}
    model = Model(artifact_path=MODEL_PATH, run_id=run_id, signature=signature(manifest),
                  flavors={"tabserve": flavor})
    model.add_flavor("python_function", loader_module="tabserve.registry.pyfunc", data=BUNDLE_PATH,
                     python_version=platform.python_version())
    model.add_flavor("onnx", onnx_version=_version_of("onnx"), data=f"{BUNDLE_PATH}/{manifest.model.file}",
                     providers=["CPUExecutionProvider"], code=None)
    _save_example(model, input_example(manifest), str(folder))
    # `mlflow models serve` (without --env-manager local) builds an environment from these.
    (folder / "requirements.txt").write_text(f"tabserve=={tabserve.__version__}\nmlflow-skinny\n",
                                             encoding="utf-8")
    model.save(str(folder / "MLmodel"))
    return folder


def input_example(manifest: Manifest, rows: int = 3) -> pd.DataFrame:
    """A few rows inside the training data's ranges: each numeric feature at its 25/50/75% quantiles (that
    share of its range where none were recorded), each categorical one at its first categories."""
    import numpy as np
    import pandas as pd

    columns: dict[str, list[Any]] = {}
    for f in manifest.features:
        if f.kind == "categorical":
            seen = f.categories or [""]
            columns[f.name] = [seen[i % len(seen)] for i in range(rows)]
        elif f.stats is not None:
            at = [(k + 1) / (rows + 1) for k in range(rows)]
            q = f.stats.quantiles
            marks = (np.interp(at, q.probs, q.values) if q.probs else
                     [f.stats.min + (f.stats.max - f.stats.min) * p for p in at])
            columns[f.name] = [float(m) for m in marks]
        else:
            columns[f.name] = [0.0] * rows
    return pd.DataFrame(columns)


def _log_dataset(mlflow: MlflowClient, run_id: str, frame: pd.DataFrame, source: str | None,
                 manifest: Manifest) -> None:
    from mlflow.data import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    target = manifest.target.name if manifest.target is not None and manifest.target.name in frame else None
    name = Path(source).name if source else manifest.name
    dataset = from_pandas(frame, source=source, targets=target, name=name,
                          digest=str(manifest.lineage.data.get("fingerprint") or "")[:36] or None)
    mlflow.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])])


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _description(manifest: Manifest) -> str:
    scores = ", ".join(f"{k}={v:.4g}" for k, v in manifest.metrics.items() if k != "rows")
    what = manifest.training.get("estimator") or manifest.training.get("model") or "model"
    text = f"{manifest.task} ({what}) from {manifest.lineage.source or '?'}"
    return f"{text}; holdout {scores}" if scores else text


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_PARAM else text[:_MAX_PARAM - 15] + f"... ({len(text)} chars)"


def _chunks(items: Sequence[Any] | Iterable[Any]) -> Iterable[list[Any]]:
    items = list(items)
    for start in range(0, len(items), _BATCH):
        yield items[start:start + _BATCH]
