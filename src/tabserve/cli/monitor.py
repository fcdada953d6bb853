"""``tabserve monitor``: check a model's live quality and input drift from the payload log; retrain when a
threshold is crossed (at most once per run, and not again within the cool-down)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tabserve.cli import command_help
from tabserve.cli.registry import alias_name, model_name
from tabserve.errors import TabserveError

EXIT_CROSSED = 1
EXIT_NOT_RUN = 3

DESCRIPTION = """\
Check model NAME against thresholds from what the payload log (tabserve serve --payload-log DIR) holds:

  quality  the --metric of the champion version's labelled predictions (feedback) since --since
  drift    the PSI of each numeric feature of its logged inputs against the training quantiles

When a threshold is crossed and --retrain is given, run `tabserve retrain NAME --from-log DIR` once
(plus --data, --alias, --min-improvement); the retraining promotes only under its usual gate. A retraining
is not triggered again within --cooldown of the last one (recorded in DIR/NAME/.monitor.json). Judging needs
at least --min-labelled labels (and as many logged rows for drift): fewer are reported, not acted on.

One check per run, meant for a CronJob (docs/lifecycle.md). Prints one JSON line. Exit status: 0 healthy
or retrained, 1 a threshold crossed and no retraining run (no --retrain, or within the cool-down),
3 could not run, else the retraining's."""

EPILOG = """\
examples:
  tabserve monitor churn --from-log /data/payload --metric accuracy --below 0.85
  tabserve monitor houses --from-log /data/payload --metric mae --above 30000 --psi-above 0.25 --retrain \\
      --data /data/houses.csv --since 14d

Needs the [loop] extra, and [train,mlflow] to fetch the champion and retrain."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("monitor", help=command_help("monitor"), description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", type=model_name, help="the registered (and served) model")
    p.add_argument("--from-log", metavar="DIR", type=Path, required=True, help="the payload log folder")
    p.add_argument("--since", metavar="WHEN", default="7d",
                   help="predictions from this recent on: 24h, 7d, or an ISO date (default 7d)")
    p.add_argument("--metric", help="accuracy, f1_macro, log_loss, roc_auc; mae, rmse, r2")
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--below", type=float, metavar="X", help="crossed when the metric falls below X")
    bound.add_argument("--above", type=float, metavar="X", help="crossed when the metric rises above X "
                       "(errors: log_loss, mae, rmse)")
    p.add_argument("--psi-above", type=float, metavar="X", help="crossed when a feature's PSI passes X "
                   "(0.1: watch, 0.25: shifted)")
    p.add_argument("--min-labelled", type=int, default=200, metavar="N",
                   help="judge only with at least N labels / logged rows (default 200)")
    p.add_argument("--retrain", action="store_true", help="retrain from the log when a threshold is crossed")
    p.add_argument("--cooldown", default="24h", metavar="DURATION",
                   help="no second retraining within this long of the last (default 24h)")
    p.add_argument("--data", metavar="FILE", type=Path, help="with --retrain: the original data, added")
    p.add_argument("--alias", metavar="ALIAS", type=alias_name, default="champion",
                   help="the champion's alias (default: champion)")
    p.add_argument("--min-improvement", type=float, default=0.0, metavar="X",
                   help="with --retrain: the promotion margin (tabserve retrain)")
    p.add_argument("--home", metavar="DIR", type=Path, help="tabserve home folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tabserve.loop.metrics import CLASSIFICATION, HIGHER_IS_BETTER, REGRESSION

    if args.metric is not None and args.metric not in HIGHER_IS_BETTER:
        return _refuse(f"--metric {args.metric!r}: choose one of {', '.join((*CLASSIFICATION, *REGRESSION))}")
    threshold = args.below if args.below is not None else args.above
    if (args.metric is None) != (threshold is None):
        return _refuse("--metric and --below/--above go together")
    if threshold is not None and (args.below is not None) != HIGHER_IS_BETTER[args.metric]:
        return _refuse(f"{args.metric} is {'higher' if HIGHER_IS_BETTER[args.metric] else 'lower'} when better: "
                       f"use --{'below' if HIGHER_IS_BETTER[args.metric] else 'above'}")
    if threshold is None and args.psi_above is None:
        return _refuse("nothing to check: give --metric with --below/--above, --psi-above, or both")
    try:
        from tabserve.core.bundle import read_bundle
        from tabserve.loop.monitor import check, last_triggered, record_trigger
        from tabserve.loop.quality import parse_since
        from tabserve.registry import open_source
        from tabserve.settings import default_home

        since = parse_since(args.since, 0)
        cooldown = (time.time() - parse_since(args.cooldown, 0).timestamp())
        source = open_source(f"models:/{args.name}@{args.alias}", home=args.home or default_home())
        champion = source.resolve()
        manifest = read_bundle(source.fetch(champion)).manifest
        verdict = check(args.from_log, args.name, manifest, champion.version, since, metric=args.metric,
                        threshold=threshold, psi_above=args.psi_above, min_labelled=args.min_labelled)
    except ImportError as exc:
        return _refuse(f"{exc}; pip install 'tabserve[loop,train,mlflow]'")
    except TabserveError as exc:
        return _refuse(str(exc))
    summary: dict[str, Any] = {"model": args.name, "version": verdict.version, "since": verdict.since,
                               "labelled": verdict.labelled, "metric": verdict.metric, "value": verdict.value,
                               "psi": verdict.psi, "crossed": verdict.reasons, "notes": verdict.notes}
    if not verdict.triggered:
        print(json.dumps({**summary, "action": "none"}))
        return 0
    last = last_triggered(args.from_log, args.name)
    if not args.retrain or (last is not None and time.time() - last < cooldown):
        action = "none: --retrain not given" if not args.retrain else "none: within the cool-down of the last"
        print(json.dumps({**summary, "action": action}))
        return EXIT_CROSSED
    print(json.dumps({**summary, "action": "retrain"}), flush=True)
    record_trigger(args.from_log, args.name, verdict)
    from tabserve.cli import retrain

    return retrain.run(argparse.Namespace(name=args.name, data=args.data, from_log=args.from_log,
                                          since=verdict.since, alias=args.alias, metric=None,
                                          min_improvement=args.min_improvement, eval_data=None, home=args.home))


def _refuse(message: str) -> int:
    print(f"tabserve monitor: error: {message}", file=sys.stderr)
    return EXIT_NOT_RUN
