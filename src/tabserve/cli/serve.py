"""``tabserve serve``: serve a bundle over HTTP with uvicorn (training the demo model first if needed)."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

from tabserve.cli import command_help, imports_without_gc
from tabserve.errors import BundleError, ConfigError
from tabserve.settings import DEMO_MODEL_NAME, Settings

# Only the settings are imported here (for the flags' help): the bundle reader and the registry (numpy,
# onnxruntime, pydantic models) are imported by the functions that use them, so `tabserve serve --help`
# answers without them.

EPILOG = """examples:
  tabserve serve                          # the demo model (trained first if missing) on 127.0.0.1:8000
  tabserve serve ~/.tabserve/models/churn --host 0.0.0.0 --port 8080 --workers 2
  TABSERVE_RANGE_POLICY=reject tabserve serve ./bundle
  tabserve serve models:/credit@champion --poll-interval-s 10
      the MLflow registry's champion; a moved alias is loaded, verified, warmed and swapped in
  tabserve serve models:/credit@champion --ab challenger=10 --shadow challenger
      10% of requests (sticky by the X-Tabserve-Key header) to the challenger alias; every request
      also scored by the challenger in the background, divergence at GET /api/v1/traffic
  tabserve serve ./models/demo --model fraud=models:/fraud/3
      two models: the default at /api/v1/predict, fraud at /api/v1/models/fraud/predict

Every flag has a TABSERVE_* environment variable (TABSERVE_PORT, TABSERVE_MAX_BATCH_ROWS, ...);
flags win over the environment."""


def register(sub: Any) -> None:
    fields = Settings.model_fields
    p = sub.add_parser("serve", help=command_help("serve"), description="Serve a model over HTTP with uvicorn; with no model given, serve the demo model "
                       "(trained first when missing).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="bundle folder, a model folder (its newest version is served), or an "
                   "MLflow registry URI models:/NAME@ALIAS | models:/NAME/VERSION; default: the demo model under "
                   "TABSERVE_HOME/models/demo")
    p.add_argument("--model", dest="models", action="append", metavar="NAME=URI", default=[],
                   help="serve another model too, under NAME (repeatable): " + fields["models"].description)
    p.add_argument("--poll-interval-s", type=float, help=fields["poll_interval_s"].description +
                   f" (default {fields['poll_interval_s'].default})")
    p.add_argument("--ab", action="append", metavar="LABEL=WEIGHT", default=[],
                   help="A/B test (repeatable): send WEIGHT percent of the default model's requests to LABEL, a "
                        "version number or an alias of the served registry model (or a URI/path); the rest "
                        "stays on the served version")
    p.add_argument("--shadow", metavar="LABEL", help="also score every request with LABEL in the background and "
                   "record the divergence (the answer never waits for it)")
    p.add_argument("--sticky-header", metavar="HEADER", help="request header whose value keeps a client on one "
                   "A/B variant (default X-Tabserve-Key)")
    p.add_argument("--host", help=f"{fields['host'].description} (default {fields['host'].default})")
    p.add_argument("--port", type=int, help=f"{fields['port'].description} (default {fields['port'].default})")
    p.add_argument("--workers", type=int, help=fields["workers"].description + " (default 1)")
    p.add_argument("--threads", type=int, dest="intra_op_threads", help=fields["intra_op_threads"].description)
    p.add_argument("--batch-threads", type=int, dest="batch_intra_op_threads",
                   help=fields["batch_intra_op_threads"].description)
    p.add_argument("--max-batch-rows", type=int, help=fields["max_batch_rows"].description)
    p.add_argument("--max-body-bytes", type=int, help=fields["max_body_bytes"].description)
    p.add_argument("--max-batch-size", type=int, help=fields["max_batch_size"].description)
    p.add_argument("--max-queue-delay-us", type=int, help=fields["max_queue_delay_us"].description)
    p.add_argument("--max-queue-size", type=int, help=fields["max_queue_size"].description)
    p.add_argument("--request-timeout-ms", type=int, help=fields["request_timeout_ms"].description)
    p.add_argument("--range-policy", choices=["off", "warn", "reject"], help=fields["range_policy"].description)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=False,
                   help="do not log one line per request")
    p.add_argument("--no-metrics", dest="metrics", action="store_const", const=False,
                   help="do not record metrics nor serve /metrics")
    p.add_argument("--drift-window-rows", type=int, help=fields["drift_window_rows"].description)
    p.add_argument("--metrics-dir", type=Path, help=fields["metrics_dir"].description)
    p.add_argument("--api-keys", metavar="JSON_OR_FILE", help=fields["api_keys"].description)
    p.add_argument("--rate-limit", metavar="LIMIT", help=fields["rate_limit"].description)
    p.add_argument("--rate-limit-storage", metavar="URI", help=fields["rate_limit_storage"].description)
    p.add_argument("--max-concurrent-requests", type=int, help=fields["max_concurrent_requests"].description)
    p.add_argument("--cors-origins", metavar="ORIGINS", help=fields["cors_origins"].description)
    p.add_argument("--shutdown-grace-s", type=float, help=fields["shutdown_grace_s"].description)
    p.add_argument("--shutdown-delay-s", type=float, help=fields["shutdown_delay_s"].description)
    p.add_argument("--max-header-bytes", type=int, help=fields["max_header_bytes"].description)
    p.add_argument("--max-inflight-body-bytes", type=int, help=fields["max_inflight_body_bytes"].description)
    p.add_argument("--admin-routes", choices=["auto", "on", "off"], help=fields["admin_routes"].description)
    p.add_argument("--trusted-proxies", metavar="ADDRESSES", help=fields["trusted_proxies"].description)
    p.add_argument("--model-roots", metavar="FOLDERS", help=fields["model_roots"].description)
    p.add_argument("--payload-log", dest="payload_log_dir", type=Path, metavar="DIR",
                   help=fields["payload_log_dir"].description)
    p.add_argument("--payload-sample", type=float, metavar="FRACTION", help=fields["payload_sample"].description)
    p.add_argument("--payload-rotate-s", type=float, help=fields["payload_rotate_s"].description)
    p.add_argument("--registry-timeout-s", type=float, help=fields["registry_timeout_s"].description)
    p.add_argument("--header-timeout-s", type=float, help=fields["header_timeout_s"].description)
    p.add_argument("--body-timeout-s", type=float, help=fields["body_timeout_s"].description)
    p.add_argument("--grpc-port", type=int, metavar="PORT", help=fields["grpc_port"].description)
    p.add_argument("--no-pretrain", dest="pretrain", action="store_const", const=False,
                   help="fail instead of training the demo model when no model exists")
    p.add_argument("--home", type=Path, help=fields["home"].description)
    p.add_argument("--ray", action="store_true", help="serve on Ray Serve replicas (a local Ray instance) instead "
                   "of uvicorn workers; same endpoints; needs the [ray] extra (docs/deployment.md, Ray)")
    p.add_argument("--replicas", type=int, metavar="N", help="with --ray: replicas, one model each (default 1)")
    p.add_argument("--autoscale", metavar="MIN:MAX", help="with --ray: let Ray Serve scale between MIN and MAX "
                   "replicas by requests in flight")
    p.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    from tabserve.registry import is_registry_uri

    keys = ("host", "port", "workers", "intra_op_threads", "max_batch_rows", "max_body_bytes", "max_batch_size",
            "max_queue_delay_us", "max_queue_size", "request_timeout_ms", "range_policy",
            "log_level", "access_log", "pretrain", "home", "metrics", "drift_window_rows", "metrics_dir")
    keys += ("api_keys", "rate_limit", "rate_limit_storage", "max_concurrent_requests", "cors_origins",
             "shutdown_grace_s", "shutdown_delay_s")
    keys += ("poll_interval_s", "batch_intra_op_threads")
    keys += ("max_header_bytes", "header_timeout_s", "body_timeout_s")
    keys += ("max_inflight_body_bytes", "admin_routes", "trusted_proxies", "model_roots", "registry_timeout_s")
    keys += ("payload_log_dir", "payload_sample", "payload_rotate_s")
    keys += ("grpc_port",)
    overrides: dict[str, Any] = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.model is not None:
        overrides["model_uri" if is_registry_uri(args.model) else "model_path"] = args.model
    if args.models:
        overrides["models"] = dict(_pair(item, "--model", "NAME=URI") for item in args.models)
    settings = Settings(**overrides)
    if args.ab or args.shadow:
        policy: dict[str, Any] = {"variants": {label: _weight(w) for label, w in
                                               (_pair(item, "--ab", "LABEL=WEIGHT") for item in args.ab)}}
        if args.shadow:
            policy["shadow"] = args.shadow
        if args.sticky_header:
            policy["sticky_header"] = args.sticky_header
        settings = settings.model_copy(update={"traffic": {**settings.traffic, _default_name(settings): policy}})
    return settings


def _pair(item: str, flag: str, form: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise ConfigError(f"{flag} {item!r}: expected {form}")
    return key, value


def _weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--ab weight {text!r} is not a number (a percentage of requests)") from None


def _default_name(settings: Settings) -> str:
    """The served name of the default model, which traffic policies are keyed by."""
    from tabserve.registry import LocalSource, registered_name

    if settings.model_uri:
        return registered_name(settings.model_uri)
    try:
        return LocalSource(settings.resolved_model_path).resolve().name
    except BundleError:
        if settings.model_path is None:  # the demo model, trained before serving
            return DEMO_MODEL_NAME
        raise


def check_port(host: str, port: int, flag: str = "--port") -> None:
    """A port another process listens on stops ``tabserve serve`` at once, in one line (uvicorn would load the
    model first, then log the bind error and exit)."""
    if port == 0:
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} cannot be resolved: {exc.strerror}") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use by another process; stop it or choose "
                                  f"another port ({flag})") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def ensure_model(settings: Settings) -> Path:
    """The bundle to serve; trains the demo model when none is given and none exists yet."""
    from tabserve.core.bundle import resolve_bundle_dir

    path = settings.resolved_model_path
    if settings.model_uri:  # a registry model: the server resolves and fetches it; a typo stops here
        from tabserve.registry.mlflow import check_served

        unavailable = check_served(settings.model_uri, home=settings.home, timeout_s=settings.registry_timeout_s)
        if unavailable is not None:
            print(f"tabserve: {unavailable.message}; starting anyway: not ready until it answers", file=sys.stderr)
        return path
    try:
        return resolve_bundle_dir(path)
    except BundleError:
        if settings.model_path is not None or not settings.pretrain:
            raise
    print(f"tabserve: no model at {path}; training the demo model first (--no-pretrain to refuse)",
          file=sys.stderr)
    try:
        from tabserve.training import train_demo
    except ImportError as exc:
        raise BundleError(f"no model at {path}, and training the demo model needs the [train] extra "
                          f"({exc.name} is missing): pip install 'tabserve[train]', or pass a bundle") from exc
    return train_demo(home=settings.home, progress=lambda line: print(line, file=sys.stderr))


def run(args: argparse.Namespace) -> int:
    with imports_without_gc():
        from tabserve.api.guard import Admission
        from tabserve.api.server import APP_FACTORY, serve
        from tabserve.core.runtime import RuntimeOptions
        from tabserve.loop import check_loop_settings

    settings = settings_from_args(args)
    Admission.from_settings(settings)  # a bad key file, limit or CORS origin: say so before starting anything
    check_port(settings.host, settings.port)  # before training or loading anything
    if settings.grpc_port:
        check_port(settings.host, settings.grpc_port, "--grpc-port")
    check_loop_settings(settings)  # --payload-log without pyarrow: say so now, not in every worker
    runtime = RuntimeOptions.from_settings(settings)  # likewise: a bad provider name stops it here
    bundle_dir = ensure_model(settings)
    if args.ray:  # Ray Serve replicas instead of uvicorn workers; Ray is imported only here
        from tabserve.ray import serve_with_ray

        return serve_with_ray(args, settings, bundle_dir)
    if not settings.model_uri and settings.model_path is None:  # the demo model: its folder, so that polling
        settings = settings.model_copy(update={"model_path": settings.demo_model_dir})  # sees new versions
    os.environ.update(settings.to_env())  # uvicorn's factory rebuilds Settings from these in every worker
    if settings.workers == 1 and not settings.model_uri:  # the app is built here: load while uvicorn imports
        from tabserve.serving import preload

        preload.start(bundle_dir, runtime)
    if settings.workers == 1:  # what uvicorn imports first, imported here with the collector paused
        with imports_without_gc():
            importlib.import_module(APP_FACTORY.partition(":")[0])
    print(f"tabserve: serving {settings.resolved_model_uri} on http://{settings.host}:{settings.port} "
          f"(docs at /docs, {settings.workers} worker(s))", file=sys.stderr)
    return serve(settings)
