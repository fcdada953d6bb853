"""``tabserve train``: fit a model on a CSV/Parquet file (or the demo data) and write a verified bundle."""

from __future__ import annotations

import argparse
import errno
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tabserve.cli import command_help
from tabserve.core.bundle import read_bundle
from tabserve.core.manifest import Manifest
from tabserve.errors import TabserveError
from tabserve.settings import default_home
from tabserve.training import options

DESCRIPTION = """\
Train a scikit-learn pipeline (StandardScaler on numeric columns, OneHotEncoder on text columns, then
an estimator) on a table, export it to ONNX in double precision, check on the holdout rows and on
adversarial rows (values at and around every split threshold, every category, missing values) that
the ONNX graph gives the same answers as the pipeline, and write a bundle (model.onnx + tabserve.json)
that `tabserve serve` can load.

Nothing is written unless every data check passes and the ONNX outputs agree with scikit-learn within
--rtol/--atol. Progress goes to stderr, the summary to stdout."""

EPILOG = """\
examples:
  tabserve train --demo
      the demo model (random forest on synthetic data) -> ~/.tabserve/models/demo/N
  tabserve train houses.csv --target price
      task guessed from the target column -> ~/.tabserve/models/houses/N
  tabserve train iris.parquet --target species --estimator gradient_boosting --name iris
  tabserve train rents.csv --target rent --estimator hist_gradient_boosting --unknown-category ignore
      text columns (e.g. city) are one-hot encoded; missing numbers are fine for this estimator
  tabserve train churn.csv --target churned --task classification --features age,tenure,spend \\
      --out ./bundles/churn/3
  tabserve train houses.csv --target price --estimator lightgbm --param n_estimators=300 \\
      --param learning_rate=0.05
      LightGBM (or xgboost) with those hyper-parameters; needs pip install 'tabserve[boost]'
  tabserve train houses.csv --target price --estimator auto
      5-fold cross-validation of linear, random_forest, gradient_boosting, lightgbm and xgboost (those
      installed) on the training rows; the best is trained, the scores are printed and kept in the manifest
  tabserve train houses.csv --target price --register houses --alias champion
      also logged to MLflow and registered as the next version of 'houses', aliased champion
      (serve it with: tabserve serve models:/houses@champion)

Rows in messages are numbered from 0, header excluded. Needs the training extra:
  pip install 'tabserve[train]'"""

_TRAIN_OPTIONS = ("task", "estimator", "features", "name", "test_size", "seed", "rtol", "atol",
                  "unknown_category")
_FILE_ONLY = ("target", "params", *_TRAIN_OPTIONS)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help=command_help("train"),
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", nargs="?", metavar="DATA", type=Path,
                   help="training data with a header row: .csv, .tsv, .parquet or .pq")
    p.add_argument("--demo", action="store_true",
                   help="train the demo model instead (random forest on 2000 synthetic rows with 5 features "
                        "feature_0..feature_4; a few seconds, always the same model)")
    p.add_argument("--target", metavar="COLUMN", help="the column to predict (required with DATA)")
    p.add_argument("--task", choices=options.TASKS,
                   help="default: guessed from the target: text, booleans and integers with at most 20 "
                        "distinct values mean classification, other numbers regression")
    p.add_argument("--estimator", choices=(*options.ESTIMATORS, options.AUTO),
                   help=f"the model after the StandardScaler (default: {options.DEFAULT_ESTIMATOR}); "
                        "linear is LinearRegression or LogisticRegression; random_forest, extra_trees, "
                        "decision_tree and hist_gradient_boosting route missing numeric values, linear and "
                        "gradient_boosting get a median imputer with missing indicators first; lightgbm and "
                        "xgboost (LGBM*/XGB* of the [boost] extra) take the numbers unscaled, missing ones "
                        "included; auto cross-validates (5 folds, stratified for classification) "
                        f"{', '.join(options.AUTO_FAMILIES)} (those installed) on the training rows with "
                        "their defaults and trains the best (r2 or accuracy)")
    p.add_argument("--param", metavar="KEY=VALUE", action="append", type=_param, dest="params",
                   help="a hyper-parameter of the estimator, e.g. n_estimators=300, max_depth=null, "
                        "class_weight=balanced; the value is read as JSON (numbers, true/false, null) or else "
                        "as text; repeat for several. Checked against the estimator's parameters; recorded "
                        "in the manifest (training.params) and in MLflow")
    p.add_argument("--features", metavar="A,B,C", type=_columns,
                   help="comma-separated feature columns, in the model's input order "
                        "(default: every column but the target)")
    p.add_argument("--unknown-category", choices=options.UNKNOWN_CATEGORY,
                   help="text columns: a category not seen in the data is refused with an error naming the "
                        "feature (error, the default) or encoded as no category (ignore)")
    p.add_argument("--name", type=_name,
                   help="model name (default: the file name without its extension, or 'demo')")
    p.add_argument("--test-size", metavar="FRACTION", type=_fraction,
                   help=f"share of the rows held out for metrics and the parity check "
                        f"(default: {options.TEST_SIZE})")
    p.add_argument("--seed", type=int,
                   help=f"random seed of the split and the estimator (default: {options.SEED})")
    add_bundle_arguments(p, source="sklearn")
    p.set_defaults(run=run)


def add_bundle_arguments(p: argparse.ArgumentParser, *, source: str) -> None:
    """Where the bundle goes and how close its ONNX must be to ``source``: shared by train and import."""
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="bundle folder to write (default: HOME/models/NAME/N, N the next version); "
                        "the version is the folder's name when that is a number, else 1")
    p.add_argument("--home", metavar="DIR", type=Path,
                   help="tabserve home folder (default: $TABSERVE_HOME, else ~/.tabserve)")
    p.add_argument("--rtol", type=_tolerance,
                   help=f"parity: relative tolerance, |onnx - {source}| <= atol + rtol*|{source}| "
                        f"(default: {options.RTOL:g})")
    p.add_argument("--atol", type=_tolerance, help=f"parity: absolute tolerance (default: {options.ATOL:g})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the bundle folder given by --out if it exists")
    from tabserve.cli.registry import add_register_arguments

    add_register_arguments(p)


def run(args: argparse.Namespace) -> int:
    _check_usage(args)
    from tabserve.cli.registry import check_register, publish

    check_register(args)
    try:
        from tabserve.training import train_demo, train_file
    except ImportError as exc:  # the [train] extra is missing; the message says how to install it
        raise TabserveError(str(exc)) from exc
    started = time.perf_counter()
    try:
        if args.demo:
            path = train_demo(args.out, home=args.home, overwrite=args.overwrite, progress=_progress)
            manifest = read_bundle(path).manifest
        else:
            chosen = {k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None}
            result = train_file(args.data, args.target, dest=args.out, home=args.home, overwrite=args.overwrite,
                                progress=_progress, params=_params(args.params), **chosen)
            path, manifest = result.path, result.manifest
        registered = publish(args, path, training_seconds=time.perf_counter() - started)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise TabserveError(_disk_full(exc, args)) from exc
    print(_summary(path, manifest, time.perf_counter() - started))
    if registered:
        print(registered)
    return 0


def _disk_full(exc: OSError, args: argparse.Namespace) -> str:
    """One line naming where the bundle was being written and the space left there (nothing was published:
    the bundle is written to a hidden staging folder first, removed on failure)."""
    where = Path(exc.filename) if exc.filename else args.out or (args.home or default_home()) / "models"
    folder = Path(where).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        left = shutil.disk_usage(folder).free
        free = f"{left / 2**20:.1f} MiB free" if left >= 2**20 else f"{left // 1024} KiB free"
    except OSError:
        free = "free space unknown"
    return (f"no space left on the disk writing {where} ({free} on {folder}'s filesystem; "
            f"{exc.strerror}): free some space or write elsewhere with --out DIR or --home DIR")


def _summary(path: Path, manifest: Manifest, seconds: float) -> str:
    training = manifest.training
    metrics = {k: v for k, v in manifest.metrics.items() if k != "rows"}
    lines = [
        (f"trained {manifest.name}:{manifest.version} ({manifest.task}, {training.get('estimator', '?')}) "
         f"in {seconds:.1f} s"),
        f"  bundle:   {path}",
        (f"  metrics:  {'  '.join(f'{k}={v:.4g}' for k, v in metrics.items())}  "
         f"({training.get('rows_holdout', '?')} holdout rows)"),
    ]
    parity = manifest.parity
    if parity is not None:
        adversarial = getattr(parity, "adversarial_rows", 0) or 0
        rows = (f"{parity.rows_checked - adversarial} holdout + {adversarial} adversarial rows" if adversarial
                else f"{parity.rows_checked} holdout rows")
        lines.append(
            f"  parity:   {'passed' if parity.passed else 'FAILED'} on {rows}: "
            f"max abs diff {parity.max_abs_diff:.3g}, max rel diff {parity.max_rel_diff:.3g} "
            f"(rtol={parity.rtol:g}, atol={parity.atol:g})"
        )
    if training.get("explain_unavailable"):
        lines.append(f"  note:     no explanations: {training['explain_unavailable']}")
    lines.append(f"  serve:    TABSERVE_MODEL_PATH={path} tabserve serve")
    return "\n".join(lines)


def _check_usage(args: argparse.Namespace) -> None:
    if args.demo:
        given = [_flag(k) for k in _FILE_ONLY if getattr(args, k) is not None]
        if args.data is not None or given:
            extra = ", ".join(([str(args.data)] if args.data is not None else []) + given)
            raise TabserveError(f"--demo trains the demo model and takes only --out, --home and --overwrite; "
                                f"remove {extra}")
    elif args.data is None:
        raise TabserveError("give a DATA file and its --target column, or --demo (see tabserve train --help)")
    elif args.target is None:
        raise TabserveError(f"--target is required with {args.data}: the name of the column to predict")


def _flag(option: str) -> str:
    return "--param" if option == "params" else f"--{option.replace('_', '-')}"


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=VALUE, e.g. n_estimators=300")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # text, e.g. class_weight=balanced
    if isinstance(value, (list, dict)):
        value = raw  # structures are not hyper-parameter values here; keep what was written
    return key, value


def _params(given: list[tuple[str, Any]] | None) -> dict[str, Any] | None:
    if not given:
        return None
    params: dict[str, Any] = {}
    for key, value in given:
        if key in params and params[key] != value:
            raise TabserveError(f"--param {key} is given twice ({params[key]!r} and {value!r}); keep one")
        params[key] = value
    return params


def _columns(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty column name; write A,B,C")
    return names


def _name(text: str) -> str:
    try:
        return options.check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (a fraction of the rows, e.g. 0.2)")
    return value


def _tolerance(text: str) -> float:
    value = _number(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a tolerance: a finite number >= 0")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
