"""``tabserve registry``: list registered models and versions, move or delete an alias (roll back), open the MLflow UI;
and the ``--register``/``--alias`` step that ``tabserve train`` and ``tabserve import`` share."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabserve.cli import command_help
from tabserve.errors import TabserveError
from tabserve.settings import default_home

DESCRIPTION = """\
The MLflow model registry that `tabserve train --register`, `tabserve import --register` and
`tabserve retrain` publish to, and `tabserve serve models:/NAME@ALIAS` serves from.

The registry is MLFLOW_TRACKING_URI when set (e.g. http://mlflow:5000, a shared server), else the
embedded store: SQLite at HOME/mlflow/mlflow.db, artifacts under HOME/mlflow/artifacts. Needs the
MLflow extra: pip install 'tabserve[mlflow]'"""

EPILOG = """\
examples:
  tabserve registry list                       every model: versions, latest, aliases
  tabserve registry list houses                houses' versions with aliases, holdout metrics, tags
  tabserve registry alias houses champion 3    point champion at version 3 (e.g. roll back);
                                               a server following models:/houses@champion swaps to it
  tabserve registry alias houses challenger --delete
                                               remove an alias (the version stays registered)
  tabserve registry ui                         the MLflow UI on the same store"""

_ALIAS = re.compile(r"[\w-]+")
_SHOWN_METRICS = ("r2", "rmse", "mae", "accuracy", "f1", "roc_auc", "log_loss")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("registry", help=command_help("registry"), description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="registered models, or one model's versions",
                             description="Without NAME: every registered model with its number of versions, "
                                         "latest version and aliases. With NAME: its versions, newest first, "
                                         "with aliases, creation time, holdout metrics and tags.")
    listing.add_argument("name", nargs="?", metavar="NAME", type=model_name)
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="versions shown (default: 20)")
    alias = sub.add_parser(
        "alias", help="point an alias at a version (how you promote or roll back), or delete it",
        description="Point ALIAS of model NAME at VERSION, e.g. `tabserve registry alias houses champion 3` "
                    "(the alias is created when new). A server that serves models:/NAME@ALIAS notices at its "
                    "next poll (or at once with its admin reload endpoint), loads the version, and swaps it in "
                    "without a restart. With --delete (and no VERSION) the alias is removed, e.g. a challenger "
                    "whose A/B test is over; its version stays registered.",
    )
    alias.add_argument("name", metavar="NAME", type=model_name)
    alias.add_argument("alias", metavar="ALIAS", type=alias_name)
    alias.add_argument("version", metavar="VERSION", type=_version, nargs="?")
    alias.add_argument("--delete", action="store_true", help="delete ALIAS instead of moving it")
    ui = sub.add_parser("ui", help="print (or run) the MLflow UI command for this registry",
                        description="The MLflow UI on the embedded store: runs it when the full mlflow "
                                    "package (which ships the UI) is installed, else prints the command. "
                                    "With MLFLOW_TRACKING_URI pointing at a server, that server is the UI.")
    ui.add_argument("--port", type=int, default=5000, help="port of the UI (default: 5000)")
    ui.add_argument("--print", dest="print_only", action="store_true",
                    help="only print the command, even when the UI is installed")
    for each in (listing, alias, ui):
        each.add_argument("--home", metavar="DIR", type=Path,
                          help="tabserve home folder (default: $TABSERVE_HOME, else ~/.tabserve)")
    p.set_defaults(run=run)


def add_register_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--register", metavar="NAME", type=model_name,
                   help="also log the bundle to MLflow and register it as a new version of model NAME "
                        "(MLFLOW_TRACKING_URI, else SQLite under HOME/mlflow; needs 'tabserve[mlflow]')")
    p.add_argument("--alias", metavar="ALIAS", type=alias_name,
                   help="with --register: point this alias (e.g. champion) at the new version")


def check_register(args: argparse.Namespace) -> None:
    """Before minutes of training: the flags make sense and MLflow is installed."""
    if getattr(args, "alias", None) is not None and getattr(args, "register", None) is None:
        raise TabserveError("--alias needs --register NAME: the alias belongs to a registered model")
    if getattr(args, "register", None) is not None and importlib.util.find_spec("mlflow") is None:
        raise TabserveError("--register needs MLflow: pip install 'tabserve[mlflow]'")


def publish(args: argparse.Namespace, path: Path, *, training_seconds: float | None = None) -> str | None:
    """Register the bundle at ``path`` when ``--register`` was given; the summary line, or None. The file that
    `tabserve train` fitted on (``args.data``) is logged as the run's training dataset."""
    if getattr(args, "register", None) is None:
        return None
    from tabserve.training.publish import register_bundle

    data: Path | None = getattr(args, "data", None)
    frame = None
    if data is not None:
        from tabserve.training.tables import read_table

        frame = read_table(data).frame
    try:
        done = register_bundle(path, args.register, alias=args.alias, home=args.home, dataset=frame,
                               dataset_source=str(Path(data).expanduser().resolve()) if data else None,
                               training_seconds=training_seconds)
    except TabserveError as exc:
        raise TabserveError(f"the bundle is written ({path}) but registering it failed: {exc}; retry with "
                            f"`tabserve registry` tools or register it again") from exc
    line = f"  registry: {args.register} version {done.version}"
    if done.alias is not None:
        line += f" (alias {done.alias})"
    uri = f"models:/{done.name}@{done.alias}" if done.alias else f"models:/{done.name}/{done.version}"
    return f"{line}\n  serve:    tabserve serve {uri}"


def model_name(text: str) -> str:
    if not text.strip() or re.search(r"[/@'\"]", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a registered model name: no '/', '@' or quotes")
    return text


def alias_name(text: str) -> str:
    if not _ALIAS.fullmatch(text) or text.lower() == "latest" or re.fullmatch(r"[vV]\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an alias: use letters, digits, '_' and '-' (not "
                                         "'latest' nor v1, v2..., which MLflow reserves)")
    return text


def _version(text: str) -> str:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)")
    return text


def run(args: argparse.Namespace) -> int:
    home = Path(args.home if args.home is not None else default_home()).expanduser()
    if args.action == "ui":
        return _ui(home, args.port, args.print_only)
    from tabserve.registry.mlflow import client, registry_errors, tracking_uri

    uri = tracking_uri(home)
    mlflow = client(uri)
    if args.action == "alias" and args.delete:
        return _delete_alias(mlflow, uri, args)
    if args.action == "alias":
        if args.version is None:
            raise TabserveError(f"which version should {args.name}@{args.alias} point at? give VERSION "
                                f"(tabserve registry alias {args.name} {args.alias} 3), or --delete to remove it")
        missing = f"model {args.name!r} has no version {args.version}"
        with registry_errors(uri, missing=missing):
            mlflow.get_model_version(args.name, args.version)
            before = dict(mlflow.get_registered_model(args.name).aliases or {}).get(args.alias)
            mlflow.set_registered_model_alias(args.name, args.alias, args.version)
        was = f" (was version {before})" if before is not None else " (new alias)"
        print(f"{args.name}@{args.alias} -> version {args.version}{was}")
        return 0
    with registry_errors(uri, missing=f"there is no model {args.name!r}"):
        print(_versions(mlflow, args.name, args.limit) if args.name else _models(mlflow, uri))
    return 0


def _delete_alias(mlflow: Any, uri: str, args: argparse.Namespace) -> int:
    from tabserve.registry.mlflow import registry_errors

    if args.version is not None:
        raise TabserveError(f"--delete takes no VERSION: tabserve registry alias {args.name} {args.alias} --delete")
    with registry_errors(uri, missing=f"there is no model {args.name!r}"):
        aliases = {str(a): str(v) for a, v in (mlflow.get_registered_model(args.name).aliases or {}).items()}
    if args.alias not in aliases:
        known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        raise TabserveError(f"model {args.name!r} has no alias {args.alias!r} to delete (its aliases: {known})")
    with registry_errors(uri):
        mlflow.delete_registered_model_alias(args.name, args.alias)
    print(f"{args.name}@{args.alias} deleted (was version {aliases[args.alias]}; the version stays registered)")
    return 0


def _models(mlflow: Any, uri: str) -> str:
    models = mlflow.search_registered_models(max_results=1000)
    if not models:
        return (f"no registered models in {uri}; register one with "
                "`tabserve train DATA --target COL --register NAME`")
    rows = [("NAME", "VERSIONS", "LATEST", "ALIASES")]
    for m in sorted(models, key=lambda m: m.name):
        versions = mlflow.search_model_versions(f"name='{m.name}'", max_results=1000)
        latest = max((int(v.version) for v in versions), default=0)
        aliases = ", ".join(f"{a}->{v}" for a, v in sorted((m.aliases or {}).items())) or "-"
        rows.append((m.name, str(len(versions)), str(latest or "-"), aliases))
    return _table(rows)


def _versions(mlflow: Any, name: str, limit: int) -> str:
    model = mlflow.get_registered_model(name)
    by_version: dict[str, list[str]] = {}
    for a, v in (model.aliases or {}).items():
        by_version.setdefault(str(v), []).append(a)
    versions = mlflow.search_model_versions(f"name='{name}'", max_results=max(1, limit),
                                            order_by=["version_number DESC"])
    rows = [("VERSION", "ALIASES", "CREATED (UTC)", "METRICS", "RETRAIN")]
    for v in versions:
        metrics = mlflow.get_run(v.run_id).data.metrics if v.run_id else {}
        shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in _SHOWN_METRICS if k in metrics) or "-"
        retrain = _retrain_note(v.tags or {}, metrics)
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        rows.append((str(v.version), ", ".join(sorted(by_version.get(str(v.version), []))) or "-", created,
                     shown, retrain))
    return f"model {name}\n" + _table(rows)


def _retrain_note(tags: dict[str, str], metrics: dict[str, float]) -> str:
    """What `tabserve retrain` decided for a challenger version: e.g. "promoted over 2 (r2 +0.041)"."""
    decision = tags.get("tabserve.retrain.decision")
    if decision is None:
        return "-"
    verb = "promoted over" if decision == "promoted" else "kept"
    change = metrics.get("eval.improvement")
    delta = f" ({tags.get('tabserve.retrain.metric', '?')} {change:+.4g})" if change is not None else ""
    return f"{verb} {tags.get('tabserve.retrain.champion_version', '?')}{delta}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _ui(home: Path, port: int, print_only: bool) -> int:
    configured = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured.startswith(("http://", "https://")):
        print(f"MLFLOW_TRACKING_URI is a server: its UI is at {configured}")
        return 0
    from tabserve.registry.mlflow import artifact_root, tracking_uri

    uri = tracking_uri(home)
    # One worker: a UI for one person (mlflow's default, 4, takes minutes to start on a small machine)
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    root = artifact_root(home)
    if root is not None:
        command += ["--default-artifact-root", str(root)]
    printable = " ".join(command)
    if print_only or not _ui_installed():
        print(printable)
        if not print_only:
            print("(the UI ships with the full mlflow package, not mlflow-skinny: pip install mlflow)",
                  file=sys.stderr)
        return 0
    print(f"{printable}\nthe MLflow UI: http://127.0.0.1:{port} (Ctrl-C stops it)", file=sys.stderr)
    return run_in_foreground([sys.executable, "-m", *command])  # the mlflow of tabserve's own environment


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_in_foreground(argv: list[str]) -> int:
    """Run ``argv`` until it exits; SIGTERM, SIGINT or SIGHUP sent to this process stop it and its own children.

    ``mlflow ui`` starts a server process of its own: a plain ``subprocess.call`` dies on SIGTERM (Python's default)
    and leaves both running, the port taken. The child gets a process group of its own, which the signal is
    passed on to; the exit status is the child's, or 128 + the signal's number."""
    child = subprocess.Popen(argv, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        try:
            code = child.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _stop_group(child.pid)  # what the child left in its group (its server's workers)
    finally:
        if child.poll() is None:
            child.kill()
    return 128 + received[0] if received else code


def _stop_group(group: int, grace_s: float = 10.0) -> None:
    """SIGTERM to every process left in ``group``, SIGKILL to those still there after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    sig = signal.SIGTERM
    while True:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            return
        time.sleep(0.1)
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        else:
            sig = 0  # only asks whether any is left


def _ui_installed() -> bool:
    spec = importlib.util.find_spec("mlflow")
    if spec is None or spec.origin is None:
        return False
    return (Path(spec.origin).parent / "server" / "js" / "build" / "index.html").is_file()
