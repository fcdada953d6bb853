"""``tabserve import``: a model trained elsewhere (LightGBM, XGBoost, scikit-learn) -> a verified bundle."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from tabserve.cli import command_help
from tabserve.cli.train import _name, _progress, add_bundle_arguments
from tabserve.core.manifest import Manifest
from tabserve.errors import TabserveError
from tabserve.training import options

DESCRIPTION = """\
Import a model trained elsewhere, export it to ONNX in double precision, check on the sample rows and
on adversarial rows (values at and around every split threshold, every category, missing values) that
the ONNX graph gives the same answers as the model, and write a bundle (model.onnx + tabserve.json)
that `tabserve serve` can load.

MODEL_FILE, by its content:
  LightGBM text model      booster.save_model("model.txt")   (LGBM*: model.booster_.save_model(...))
  XGBoost JSON or UBJSON   booster.save_model("model.json")  (XGB*: model.get_booster().save_model(...))
  pickle (.pkl, .pickle, .joblib): a fitted scikit-learn model or pipeline, ONLY with --trust-pickle

Native LightGBM and XGBoost files are read without pickle. A pickle is different: unpickling runs
arbitrary code from the file, with your permissions. tabserve refuses it, before unpickling it, unless
you pass --trust-pickle; only do so for a file you produced or trust. Saving the model in a native format,
or retraining it with `tabserve train`, avoids pickle altogether.

The sample (a CSV or Parquet file of the model's input data) names the features and gives their
statistics (for range checks and drift); its rows are the parity check's holdout. A model that names its
features must find exactly those columns (besides --target and --ignore); one trained on a bare array
(Column_0.., f0..) takes the sample's columns in order.

Nothing is written unless the ONNX outputs agree with the model within --rtol/--atol. A model with no
exact export is refused, naming the step; --approximate exports it with skl2onnx instead and records the
error it measured as the bundle's bound (shown in every response's model_format). An IsolationForest
becomes an anomaly model (label -1/1, score, decision). Progress goes to stderr, the summary to stdout."""

EPILOG = """\
examples:
  tabserve import houses.txt --sample houses.csv --target price
      a LightGBM text model; the target column gives r2/rmse/mae -> ~/.tabserve/models/houses/N
  tabserve import churn.json --sample churn.parquet --classes stay,leave --name churn
      an XGBoost binary classifier whose classes 0/1 mean stay/leave
  tabserve import pipeline.joblib --sample rents.csv --target rent --trust-pickle
      a scikit-learn pipeline you pickled yourself (unpickling runs the file's code)
  tabserve import model.ubj --sample sample.csv --out ./bundles/model/3 --overwrite
  tabserve import gp.joblib --sample rows.csv --trust-pickle --approximate
      a Gaussian process (no exact export): skl2onnx's graph, its measured error recorded
  tabserve import model.txt --sample rows.csv --target price --ignore id,date
      the sample's id and date columns are not features: left out

Rows in messages are numbered from 0, header excluded. Needs the training extra (and lightgbm or
xgboost for their models): pip install 'tabserve[train]'"""

_IMPORT_OPTIONS = ("target", "ignore", "task", "classes", "name", "rtol", "atol")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import", help=command_help("import"),
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_file", metavar="MODEL_FILE", type=Path,
                   help="the model: LightGBM text, XGBoost JSON/UBJSON, or a pickle (.pkl, .pickle, .joblib; "
                        "needs --trust-pickle)")
    p.add_argument("--sample", metavar="DATA", type=Path, required=True,
                   help="rows of the model's input data with a header row (.csv, .tsv, .parquet or .pq, at "
                        "least 20 rows): the features, their statistics and the parity check's rows")
    p.add_argument("--target", metavar="COLUMN",
                   help="a column of the sample with the true values: left out of the features, it gives "
                        "metrics on the sample rows (r2/rmse/mae or accuracy/f1/roc_auc) and is recorded "
                        "in the manifest")
    p.add_argument("--ignore", metavar="COLUMN", action="extend", type=_column_list,
                   help="a column of the sample that is not a feature (an id, a date): left out of the "
                        "features and the parity check; repeat it or write A,B for several. Any other column "
                        "the model does not take is refused, naming it")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled model: unpickling runs arbitrary code from the file; only for files "
                        "you produced or trust")
    p.add_argument("--approximate", action="store_true",
                   help="a model with no exact export (its step is named in the refusal): export it with "
                        "skl2onnx instead (double where it can, else float32), measure its error on the sample "
                        "and adversarial rows and record it as the bundle's bound, in the manifest "
                        "('approximation') and in every response's model_format; labels must still agree")
    p.add_argument("--classes", metavar="A,B,C", type=_classes,
                   help="native LightGBM/XGBoost classifiers: the labels of classes 0..K-1, in order "
                        "(default: 0..K-1; numbers stay numbers)")
    p.add_argument("--task", choices=options.TASKS,
                   help="only for a model that does not say (default: from the model: a classifier, or an "
                        "objective binary/multiclass, means classification; else regression)")
    p.add_argument("--name", type=_name,
                   help="model name (default: the model file's name without its extension)")
    add_bundle_arguments(p, source="model")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tabserve.cli.registry import check_register, publish

    check_register(args)
    try:
        from tabserve.training import import_model
    except ImportError as exc:  # the [train] extra is missing; the message says how to install it
        raise TabserveError(str(exc)) from exc
    started = time.perf_counter()
    chosen = {k: getattr(args, k) for k in _IMPORT_OPTIONS if getattr(args, k) is not None}
    result = import_model(args.model_file, args.sample, dest=args.out, home=args.home,
                          overwrite=args.overwrite, trust_pickle=args.trust_pickle,
                          approximate=args.approximate, progress=_progress,
                          **chosen)
    registered = publish(args, result.path)
    print(_summary(result.path, result.manifest, time.perf_counter() - started))
    if registered:
        print(registered)
    return 0


def _summary(path: Path, manifest: Manifest, seconds: float) -> str:
    training = manifest.training
    lines = [
        (f"imported {manifest.name}:{manifest.version} ({manifest.task}, {training.get('model', '?')}) from "
         f"{training.get('imported_from', '?')} ({training.get('format', '?')}) in {seconds:.1f} s"),
        f"  bundle:   {path}",
        f"  features: {len(manifest.features)}, from the sample {manifest.lineage.data.get('sample', '?')}",
    ]
    metrics = {k: v for k, v in manifest.metrics.items() if k != "rows"}
    if metrics:
        lines.append(f"  metrics:  {'  '.join(f'{k}={v:.4g}' for k, v in metrics.items())}  "
                     f"({training.get('rows_sample', '?')} sample rows)")
    parity = manifest.parity
    if parity is not None:
        adversarial = getattr(parity, "adversarial_rows", 0) or 0
        lines.append(
            f"  parity:   {'passed' if parity.passed else 'FAILED'} on {parity.rows_checked - adversarial} "
            f"sample + {adversarial} adversarial rows: max abs diff {parity.max_abs_diff:.3g}, max rel diff "
            f"{parity.max_rel_diff:.3g} (rtol={parity.rtol:g}, atol={parity.atol:g})")
    if manifest.approximation is not None:
        approx = manifest.approximation
        lines.append(f"  APPROXIMATE: {approx.exporter}, max abs error {approx.max_abs_error:.3g}, max rel error "
                     f"{approx.max_rel_error:.3g} on {approx.rows} rows ({approx.reason})")
    if training.get("explain_unavailable"):
        lines.append(f"  note:     no explanations: {training['explain_unavailable']}")
    lines.append(f"  serve:    TABSERVE_MODEL_PATH={path} tabserve serve")
    return "\n".join(lines)


def _column_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty column name; write A or A,B")
    return names


def _classes(text: str) -> list[Any]:
    labels = [c.strip() for c in text.split(",")]
    if len(labels) < 2 or not all(labels):
        raise argparse.ArgumentTypeError(f"{text!r}: write two or more labels, comma-separated, e.g. no,yes")
    try:
        return [int(c) for c in labels]
    except ValueError:
        return labels
