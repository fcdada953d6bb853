"""tabserve on Ray: a Ray Serve deployment of the server and Ray Data batch scoring (the [ray] extra).

``import tabserve.ray`` does not import Ray; ``deployment`` and ``score_file_ray`` do, when first used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabserve.errors import ConfigError, TabserveError

if TYPE_CHECKING:
    from tabserve.settings import Settings

__all__ = ["deployment", "score_file_ray", "serve_with_ray"]


def __getattr__(name: str) -> Any:
    if name == "deployment":
        return _import("tabserve.ray.serving").deployment
    if name == "score_file_ray":
        return _import("tabserve.ray.data").score_file_ray
    raise AttributeError(f"module 'tabserve.ray' has no attribute {name!r}")


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TabserveError(f"Ray support needs the [ray] extra ({exc.name} is missing): "
                            "pip install 'tabserve[ray]'") from exc


def parse_autoscale(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None or bounds[0] < 0 or bounds[1] < max(bounds[0], 1):
        raise ConfigError(f"--autoscale takes MIN:MAX replicas with 0 <= MIN <= MAX and MAX >= 1, e.g. 1:4; "
                          f"got {text!r}")
    return bounds


def serve_with_ray(args: argparse.Namespace, settings: Settings, bundle_dir: Path) -> int:
    """``tabserve serve --ray``: the bundle ``bundle_dir`` on Ray Serve replicas (see ``serving.run``)."""
    if getattr(args, "models", None) or getattr(args, "ab", None) or getattr(args, "shadow", None):
        raise ConfigError("--ray serves one bundle; --model NAME=URI, --ab and --shadow need plain tabserve serve")
    if (getattr(args, "workers", None) or 1) > 1:
        raise ConfigError("--workers is for uvicorn; with --ray, ask for --replicas N (one model each)")
    if args.replicas is not None and args.autoscale is not None:
        raise ConfigError("--replicas and --autoscale exclude each other: a fixed count, or a range")
    if args.replicas is not None and args.replicas < 1:
        raise ConfigError(f"--replicas must be at least 1; got {args.replicas}")
    autoscale = parse_autoscale(args.autoscale) if args.autoscale is not None else None
    serving = _import("tabserve.ray.serving")
    return serving.run(settings.model_copy(update={"model_path": bundle_dir}), num_replicas=args.replicas or 1,
                       autoscaling=autoscale)
