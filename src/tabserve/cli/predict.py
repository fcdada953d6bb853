"""``tabserve predict``: score a CSV or parquet file offline, in chunks, in this process or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tabserve.batch import DEFAULT_BATCH_ROWS
from tabserve.cli import command_help
from tabserve.core.bundle import resolve_bundle_dir
from tabserve.errors import BundleError, TabserveError
from tabserve.registry import local_bundle
from tabserve.settings import Settings

EPILOG = """examples:
  tabserve predict customers.csv -o scored.parquet                 # the demo model, all input columns kept
  tabserve predict big.parquet -o scored.csv --model ./bundle --keep id,region
  tabserve predict big.parquet -o scored.parquet --model models:/houses@champion   # a registry version
  tabserve predict big.parquet -o scored.parquet --ray              # Ray Data on a local Ray instance
  tabserve predict s3-mounted/big.parquet -o scored/ --ray --ray-address ray://head:10001

The output has the input's columns (or --keep's), then 'prediction' (the value, or the class label) and, for
classifiers, one 'probability_<class>' column per class. Rows keep the input order. The output file appears
only once every row is scored: an error leaves no partial file. Errors name the row (counted from 0, the
header excluded), the column and the value."""


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help=command_help("predict"),
                       description="Score every row of a CSV or parquet file with a bundle and write the "
                       "predictions to a CSV or parquet file, reading the input in chunks (a file larger than "
                       "memory is fine). With --ray, Ray Data spreads the chunks over a pool of workers.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="input file: .csv (with a header line) or .parquet")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file: .parquet or .csv (with --ray, a folder name without suffix gets parquet "
                   "files written by the workers)")
    p.add_argument("--model", help="bundle folder, a model folder (its newest version), or a registry version "
                   "models:/NAME@ALIAS | models:/NAME/VERSION (downloaded into TABSERVE_HOME's cache from "
                   "MLFLOW_TRACKING_URI, else the embedded store); default: the demo model under "
                   "TABSERVE_HOME/models/demo")
    p.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS,
                   help=f"rows scored per onnxruntime call and held in memory per chunk (default {DEFAULT_BATCH_ROWS})")
    p.add_argument("--keep", metavar="COLS", help="comma-separated input columns to copy to the output (default: "
                   "all of them; '' for none)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: one per core; with "
                   "--ray each worker uses 1)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.add_argument("--ray", action="store_true", help="score with Ray Data: read the file as blocks, score them "
                   "in a pool of actors (one model each), write parquet or CSV (needs the [ray] extra)")
    p.add_argument("--ray-address", metavar="ADDR", help="with --ray: the Ray cluster to join (e.g. "
                   "ray://head:10001 or auto); default: start a local Ray instance for this job")
    p.add_argument("--ray-workers", type=int, metavar="N", help="with --ray: scoring actors (default: one per CPU "
                   "of the Ray instance)")
    p.add_argument("--home", type=Path, help=Settings.model_fields["home"].description)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_rows < 1:
        raise TabserveError(f"--batch-rows must be at least 1; got {args.batch_rows}")
    if (args.ray_address or args.ray_workers) and not args.ray:
        raise TabserveError("--ray-address and --ray-workers need --ray")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise TabserveError(f"--ray-workers must be at least 1; got {args.ray_workers}")
    settings = Settings(**({"home": args.home} if args.home else {}))
    try:
        bundle_dir = (local_bundle(args.model, home=settings.home, timeout_s=settings.registry_timeout_s)
                      if args.model is not None else resolve_bundle_dir(settings.demo_model_dir))
    except BundleError as exc:
        if args.model is not None:
            raise
        raise BundleError(f"{exc}; pass the model to use with --model BUNDLE (or train the demo model: tabserve "
                          "train --demo)") from exc
    keep = None if args.keep is None else [c.strip() for c in args.keep.split(",") if c.strip()]
    try:
        if args.ray:
            from tabserve.ray.data import score_file_ray

            report = score_file_ray(bundle_dir, args.input, args.output, batch_rows=args.batch_rows, keep=keep,
                                    workers=args.ray_workers, address=args.ray_address, progress=args.progress)
        else:
            import tabserve
            from tabserve.batch.run import score_file

            model = tabserve.load(bundle_dir, intra_op_threads=args.threads)
            report = score_file(model, args.input, args.output, batch_rows=args.batch_rows, keep=keep,
                                progress=args.progress)
    except ImportError as exc:
        extra = "ray" if args.ray else "batch"
        raise TabserveError(f"tabserve predict{' --ray' if args.ray else ''} needs the [{extra}] extra "
                            f"({exc.name} is missing): pip install 'tabserve[{extra}]'") from exc
    print(f"tabserve: scored {report.rows:,} rows in {report.seconds:.2f} s ({report.rows_per_s:,.0f} rows/s) "
          f"with {bundle_dir} -> {report.output}", file=sys.stderr)
    return 0
