"""The ``tabserve`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator, Sequence

from tabserve import __version__
from tabserve.errors import TabserveError

# Each command's module and its one line for ``tabserve --help``. A command's module (and what it imports:
# numpy, onnxruntime, FastAPI...) is imported only when that command runs or shows its own help, so
# ``tabserve serve`` starts without the training or registry commands' imports and ``tabserve --help`` with
# none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model on a CSV/Parquet file (or the demo) and write a bundle"),
    "import": ("import_", ("import a LightGBM, XGBoost or (with --trust-pickle) scikit-learn model and write "
                           "a bundle")),
    "serve": ("serve", "serve a model over HTTP"),
    "bench": ("bench", "measure model init time and prediction latency"),
    "keys": ("keys", "make API keys and their hashes"),
    "registry": ("registry", "list registered models, move an alias (roll back), open the MLflow UI"),
    "retrain": ("retrain", "retrain a registered model on new data and promote it if better"),
    "monitor": ("monitor", ("check live quality and drift from the payload log; retrain when a threshold "
                            "is crossed")),
    "predict": ("predict", "score a CSV or parquet file offline (batch scoring)"),
    "report": ("report", "write a model's HTML report (metrics, importance, parity, statistics)"),
}


def command_help(command: str) -> str:
    """The one-line help of ``command``, as ``tabserve --help`` lists it."""
    return COMMANDS[command][1]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, given ``argv``, of the command it names (the others listed by name and
    summary only: argv chooses one command, so the others are never parsed)."""
    parser = argparse.ArgumentParser(
        prog="tabserve",
        description="Train or load a tabular model, export it to ONNX with proven parity, and serve it over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"tabserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_in(argv) if argv is not None else None
    for name, (module, help_line) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(f"tabserve.cli.{module}").register(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first argument that is not an option (the top level has no option that
    takes a value)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """Imports with Python's cyclic collector paused: it would run every 700 allocations and find no garbage
    among the modules, classes and functions being created, ~15% of ``tabserve serve``'s imports (measured:
    0.55 s instead of 0.66 s of CPU). Afterwards what exists is moved out of later collections (``gc.freeze``:
    imported code lives as long as the process; without it, the first collection after the pause is a full
    one, ~0.1 s) and the collector runs again. For ``tabserve serve`` only: a process that calls ``main`` for
    other commands (a test suite, a notebook) keeps its collector as it was."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with imports_without_gc() if _command_in(argv) == "serve" else contextlib.nullcontext():
        parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TabserveError as exc:
        print(f"tabserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
