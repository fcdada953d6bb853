"""The closed loop: payload log, ground-truth feedback, live quality, retraining from traffic (docs/loop.md).

Nothing here is imported by the serving path unless ``payload_log_dir`` is set; pyarrow (the ``[loop]`` extra)
is imported only then.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tabserve.loop.service import LoopService, check_loop_settings, loop_service
from tabserve.observability.payload import PayloadSink
from tabserve.settings import Settings


def payload_sink(settings: Settings, registry: CollectorRegistry | None = None) -> PayloadSink | None:
    """The payload log ``settings`` ask for (``payload_log_dir``), or None."""
    service = loop_service(settings, registry)
    return service.log if service is not None else None


__all__ = ["LoopService", "check_loop_settings", "loop_service", "payload_sink"]
