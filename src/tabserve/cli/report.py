"""``tabserve report``: write a model's HTML report (metrics, importance, parity, feature statistics)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tabserve.cli import command_help
from tabserve.errors import DataError, TabserveError

EPILOG = """examples:
  tabserve report ~/.tabserve/models/demo/1                    # writes report.html here
  tabserve report ./bundle -o /tmp/demo.html
  tabserve report ./bundle --data holdout.csv --target price    # + predicted vs actual, mean |SHAP|
  tabserve report models:/houses@champion -o champion.html      # a registry version

Everything but --data comes from the bundle itself (tabserve.json): no training data is needed."""


def register(sub: Any) -> None:
    p = sub.add_parser("report", help=command_help("report"),
                       description="Write one self-contained HTML page about a bundle: holdout metrics, ONNX "
                       "parity, feature importance and feature statistics, with PNG charts (needs matplotlib: "
                       "pip install 'tabserve[report]').", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle folder (or a model folder: its newest version), or a registry "
                   "version models:/NAME@ALIAS | models:/NAME/VERSION (MLFLOW_TRACKING_URI, else the embedded "
                   "store under TABSERVE_HOME)")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--data", help="a CSV/Parquet file of rows to score: adds predicted vs actual and the mean "
                   "|SHAP value| per feature (at most --rows rows)")
    p.add_argument("--target", help="the target column of --data (default: the manifest's target name)")
    p.add_argument("--rows", type=int, default=1000, help="rows of --data to use (default: 1000)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tabserve.core.bundle import read_bundle

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TabserveError("tabserve report draws its charts with matplotlib: pip install 'tabserve[report]'") \
            from None
    from tabserve.cli.report_page import render
    from tabserve.registry import is_registry_uri, local_bundle

    bundle = read_bundle(local_bundle(args.bundle) if is_registry_uri(args.bundle) else args.bundle)
    evaluation = _evaluate(bundle, args.data, args.target, args.rows) if args.data else None
    out = Path(args.output)
    out.write_text(render(bundle.manifest, evaluation), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): {bundle.name} {bundle.version}")
    return 0


def _evaluate(bundle: Any, data: str, target: str | None, rows: int) -> Any:
    from tabserve.cli.report_page import Evaluation
    from tabserve.core.explain.explainer import Explainer, ExplainUnavailable
    from tabserve.core.model import Model
    from tabserve.training.tables import read_table

    manifest = bundle.manifest
    target = target or (manifest.target.name if manifest.target else None)
    table = read_table(data)
    warning = trained_on(manifest, table)
    if warning:
        print(f"tabserve: warning: {warning}", file=sys.stderr)
    frame = table.frame.iloc[:max(rows, 1)]
    if target is None or target not in frame.columns:
        raise DataError(f"{table.name} has no target column {target!r}: give it with --target")
    model = Model.from_bundle(bundle)
    x = model._as_array(frame)
    predicted = model.run(x).values
    shap_means = None
    try:
        explanation = Explainer.from_bundle(bundle).explain(x)
        means = np.abs(explanation.contributions).mean(axis=(0, 1))
        shap_means = dict(zip(manifest.feature_names, means.tolist(), strict=True))
    except ExplainUnavailable:
        pass
    return Evaluation(table.name, frame[target].to_numpy(), predicted, shap_means, warning)


def trained_on(manifest: Any, table: Any) -> str | None:
    """Why the rows of ``table`` say little about the model, when they are the file it was trained on: the
    manifest records the sha256 of the training file's bytes (lineage.data.fingerprint)."""
    if not table.fingerprint or table.fingerprint != manifest.lineage.data.get("fingerprint"):
        return None
    trained = manifest.training.get("rows_train")
    share = f"{trained} of its rows trained the model" if trained else "its rows trained the model"
    return (f"{table.name} is the file this model was trained on (same sha256): {share}, so the charts below "
            "are optimistic; give rows held out of training (a later or separate file)")
