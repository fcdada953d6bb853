"""The loop's parts a server holds: the payload log (a ``PayloadSink``), the store it writes to, and the
quality monitor reading it back. Built from settings; nothing exists unless ``payload_log_dir`` is set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from tabserve.errors import ConfigError
from tabserve.settings import Settings

if TYPE_CHECKING:
    from tabserve.loop.payload import ParquetPayloadLog
    from tabserve.loop.quality import QualityMonitor
    from tabserve.loop.store import LocalStore

NEEDS_PYARROW = ("the payload log (--payload-log, TABSERVE_PAYLOAD_LOG_DIR) writes Parquet with pyarrow, which is "
                 "not installed: pip install 'tabserve[loop]'")


@dataclass
class LoopService:
    store: LocalStore
    log: ParquetPayloadLog
    quality: QualityMonitor

    def start(self) -> None:
        self.quality.start()

    def close(self) -> None:
        """At shutdown: publish what the log holds, stop the quality thread."""
        self.log.close()
        self.quality.close()


def loop_service(settings: Settings, registry: CollectorRegistry | None = None) -> LoopService | None:
    """The loop of a server with ``settings``; None when no payload log is configured. Raises ``ConfigError``
    when one is but pyarrow is missing."""
    if settings.payload_log_dir is None:
        return None
    try:
        from tabserve.loop.payload import ParquetPayloadLog
        from tabserve.loop.quality import QualityMonitor
        from tabserve.loop.store import LocalStore
    except ImportError as exc:
        raise ConfigError(NEEDS_PYARROW) from exc
    store = LocalStore(settings.payload_log_dir)
    log = ParquetPayloadLog(store, sample=settings.payload_sample, max_queue_rows=settings.payload_queue_rows,
                            rotate_bytes=settings.payload_rotate_bytes, rotate_seconds=settings.payload_rotate_s,
                            registry=registry)
    quality = QualityMonitor(store, window_s=settings.quality_window_s, interval_s=settings.quality_interval_s,
                             registry=registry)
    return LoopService(store, log, quality)


def check_loop_settings(settings: Settings) -> None:
    """``tabserve serve`` refuses ``--payload-log`` without pyarrow before loading anything."""
    if settings.payload_log_dir is not None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ConfigError(NEEDS_PYARROW) from exc
