"""``tabserve serve``: serve a bundle over HTTP with uvicorn (training the demo model first if needed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tabserve.core.bundle import resolve_bundle_dir
from tabserve.errors import BundleError
from tabserve.settings import Settings

EPILOG = """examples:
  tabserve serve                          # the demo model (trained first if missing) on 127.0.0.1:8000
  tabserve serve ~/.tabserve/models/churn --host 0.0.0.0 --port 8080 --workers 2
  TABSERVE_RANGE_POLICY=reject tabserve serve ./bundle

Every flag has a TABSERVE_* environment variable (TABSERVE_PORT, TABSERVE_MAX_BATCH_ROWS, ...);
flags win over the environment."""


def register(sub: Any) -> None:
    fields = Settings.model_fields
    p = sub.add_parser("serve", help="serve a model over HTTP", description="Serve a model over HTTP with uvicorn; with no model given, serve the demo model "
                       "(trained first when missing).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=Path, help="bundle folder, or a model folder (its newest version "
                   "is served); default: the demo model under TABSERVE_HOME/models/demo")
    p.add_argument("--host", help=f"{fields['host'].description} (default {fields['host'].default})")
    p.add_argument("--port", type=int, help=f"{fields['port'].description} (default {fields['port'].default})")
    p.add_argument("--workers", type=int, help=fields["workers"].description + " (default 1)")
    p.add_argument("--threads", type=int, dest="intra_op_threads", help=fields["intra_op_threads"].description)
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
    keys = ("host", "port", "workers", "intra_op_threads", "max_batch_rows", "max_body_bytes", "max_batch_size",
            "max_queue_delay_us", "max_queue_size", "request_timeout_ms", "range_policy",
            "log_level", "access_log", "pretrain", "home", "metrics", "drift_window_rows", "metrics_dir")
    keys += ("api_keys", "rate_limit", "rate_limit_storage", "max_concurrent_requests", "cors_origins",
             "shutdown_grace_s", "shutdown_delay_s")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.model is not None:
        overrides["model_path"] = args.model
    return Settings(**overrides)


def ensure_model(settings: Settings) -> Path:
    """The bundle to serve; trains the demo model when none is given and none exists yet."""
    path = settings.resolved_model_path
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
    from tabserve.api.guard import Admission
    from tabserve.api.server import serve
    from tabserve.core.runtime import RuntimeOptions

    settings = settings_from_args(args)
    Admission.from_settings(settings)  # a bad key file, limit or CORS origin: say so before starting anything
    runtime = RuntimeOptions.resolve(settings.intra_op_threads, settings.execution_providers)  # likewise
    bundle_dir = ensure_model(settings)
    if args.ray:  # Ray Serve replicas instead of uvicorn workers; Ray is imported only here
        from tabserve.ray import serve_with_ray

        return serve_with_ray(args, settings, bundle_dir)
    settings = settings.model_copy(update={"model_path": bundle_dir})
    os.environ.update(settings.to_env())  # uvicorn's factory rebuilds Settings from these in every worker
    if settings.workers == 1:  # the app is built in this process: load the model while uvicorn imports it
        from tabserve.serving import preload

        preload.start(bundle_dir, runtime)
    print(f"tabserve: serving {bundle_dir} on http://{settings.host}:{settings.port} "
          f"(docs at /docs, {settings.workers} worker(s))", file=sys.stderr)
    return serve(settings)
