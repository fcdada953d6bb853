"""``tabserve retrain``: retrain a registered model on new data; promote the challenger only if better."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from tabserve.cli import command_help
from tabserve.cli.registry import alias_name, model_name
from tabserve.errors import TabserveError

EXIT_NOT_RUN = 3

DESCRIPTION = """\
Retrain model NAME on new data (a file, or the labelled traffic of a payload log) with the recipe its
champion was trained with, and promote the new version only if it is better.

1. The champion, models:/NAME@ALIAS, is fetched from the MLflow registry as a bundle (no pickle); its
   manifest gives the recipe: target, task, estimator, features, seed, test size, parity tolerances.
2. A challenger is trained on DATA with that recipe (the same checks as `tabserve train`).
3. Both are scored from their ONNX bundles on the same rows: the challenger's holdout of DATA, or every
   row of --eval-data (a fixed evaluation file makes runs comparable over time).
4. The challenger is registered as a new version, always; ALIAS moves to it only if --metric improves by
   at least --min-improvement (and by more than 0). A server that serves models:/NAME@ALIAS picks the
   promotion up at its next poll, without a restart.
5. The decision, both scores (every metric), the evaluation rows' count and sha256 fingerprint are
   recorded on the challenger's MLflow run (metrics eval.champion.*, eval.challenger.*; tags
   tabserve.retrain.*) and on its model version (tags).

Metrics (higher is better unless said): regression r2 (default), rmse (lower), mae (lower);
classification accuracy (default), log_loss (lower), roc_auc, f1.

Exit status: 0 when it ran, promoted or not (the summary says which); 3 when it could not run (no such
model or alias, an imported champion with no recipe, unusable data, registry unreachable). Progress goes
to stderr, the summary to stdout."""

EPILOG = """\
examples:
  tabserve retrain houses --data houses-2024-06.csv
      champion -> the challenger if its r2 on its holdout is higher
  tabserve retrain houses --data june.csv --eval-data fixed-eval.csv --metric rmse --min-improvement 500
      promote only if the RMSE on a fixed evaluation file drops by 500 or more
  tabserve retrain churn --data churn.parquet --alias production --metric roc_auc
  tabserve retrain churn --from-log /var/lib/tabserve/payload --since 2026-11-01 --data churn.parquet
      production traffic since November with its feedback labels, plus the original data

cron (every Monday at 03:00; MLFLOW_TRACKING_URI for a shared registry):
  0 3 * * 1  MLFLOW_TRACKING_URI=http://mlflow:5000 tabserve retrain houses --data /data/houses.csv

Needs the training and MLflow extras: pip install 'tabserve[train,mlflow]'"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("retrain", help=command_help("retrain"), description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", type=model_name, help="the registered model")
    p.add_argument("--data", metavar="FILE", type=Path,
                   help="the new training data (.csv, .tsv, .parquet, .pq) with the champion's target and "
                        "feature columns (with --from-log: added to the logged rows, e.g. the original data)")
    p.add_argument("--from-log", metavar="DIR", type=Path,
                   help="train on production traffic: the rows the payload log DIR (tabserve serve "
                        "--payload-log) holds for NAME, joined with their feedback labels (docs/loop.md)")
    p.add_argument("--since", metavar="DATE", help="with --from-log: only predictions from DATE on (an ISO date "
                   "or date-time, UTC)")
    p.add_argument("--alias", metavar="ALIAS", type=alias_name, default="champion",
                   help="the alias whose version is the champion, and that moves on promotion "
                        "(default: champion)")
    p.add_argument("--metric", metavar="METRIC",
                   help="what decides: r2 (default), rmse or mae for regression; accuracy (default), "
                        "log_loss, roc_auc or f1 for classification")
    p.add_argument("--min-improvement", metavar="X", type=_margin, default=0.0,
                   help="promote only if the metric improves by at least X, in the metric's own units "
                        "(default: 0, any improvement)")
    p.add_argument("--eval-data", metavar="FILE", type=Path,
                   help="score both on every row of this file instead of the challenger's holdout of --data")
    p.add_argument("--home", metavar="DIR", type=Path,
                   help="tabserve home folder (default: $TABSERVE_HOME, else ~/.tabserve)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.data is None and args.from_log is None:
        print("tabserve retrain: error: give the new data (--data FILE), the payload log (--from-log DIR), or "
              "both", file=sys.stderr)
        return EXIT_NOT_RUN
    if args.since is not None and args.from_log is None:
        print("tabserve retrain: error: --since selects logged predictions; it needs --from-log DIR",
              file=sys.stderr)
        return EXIT_NOT_RUN
    try:
        from tabserve.training.retrain import retrain

        since = None
        if args.since is not None:
            from tabserve.loop.dataset import parse_day

            since = parse_day(args.since)
        result = retrain(args.name, args.data, alias=args.alias, metric=args.metric,
                         min_improvement=args.min_improvement, eval_data=args.eval_data, home=args.home,
                         progress=_progress, from_log=args.from_log, since=since)
    except ImportError as exc:
        print(f"tabserve retrain: error: {exc}; pip install 'tabserve[train,mlflow]'", file=sys.stderr)
        return EXIT_NOT_RUN
    except TabserveError as exc:
        print(f"tabserve retrain: error: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    print(summary(result, time.perf_counter() - started))
    return 0


def summary(result: Any, seconds: float) -> str:
    name, alias = result.name, result.alias
    champion, challenger = result.champion.version, result.challenger.version
    lines = [(f"retrained {name} in {seconds:.1f} s: challenger version {challenger} vs champion version "
              f"{champion} ({alias})"),
             f"  evaluated on {result.evaluation.rows} rows: {result.evaluation.source}",
             f"  rows fingerprint: {result.evaluation.fingerprint}",
             f"  {'metric':<10}{'champion':>12}{'challenger':>12}"]
    from tabserve.training.retrain import METRICS

    task_metrics = next(m for m in METRICS.values() if result.metric in m)
    for metric, higher in task_metrics.items():
        if metric in result.champion_scores and metric in result.challenger_scores:
            mark = "*" if metric == result.metric else " "
            lines.append(f"  {metric + mark:<10}{result.champion_scores[metric]:>12.4g}"
                         f"{result.challenger_scores[metric]:>12.4g}   "
                         f"({'higher' if higher else 'lower'} is better)")
    change = f"{result.metric} {'improved' if result.promoted else 'changed'} by {result.improvement:+.4g}"
    change += (f" (margin {result.min_improvement:g})" if result.promoted else
               f" (promotion needs > 0 and >= {result.min_improvement:g})")
    if result.promoted:
        lines.append(f"  decision: PROMOTED: {change}; {name}@{alias} -> version {challenger} "
                     f"(was {champion})")
    else:
        lines.append(f"  decision: KEPT version {champion}: {change}; version {challenger} is registered "
                     f"without the alias")
    return "\n".join(lines)


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a margin: a finite number >= 0")
    return value


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
