"""The ``tabserve`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tabserve import __version__
from tabserve.errors import TabserveError


def build_parser() -> argparse.ArgumentParser:
    from tabserve.cli import bench, import_, keys, monitor, predict, registry, report, retrain, serve, train

    parser = argparse.ArgumentParser(
        prog="tabserve",
        description="Train or load a tabular model, export it to ONNX with proven parity, and serve it over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"tabserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, import_, serve, bench, keys, registry, retrain, monitor, predict, report):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TabserveError as exc:
        print(f"tabserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
