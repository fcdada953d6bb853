"""Stopping well: on SIGTERM readiness answers 503 at once; the server stops after ``shutdown_delay_s``.

The ASGI server owns the signals (uvicorn installs its handlers before the app starts); the app chains its own
in front at start-up, so this works in every uvicorn worker process, under ``tabserve serve`` or plain
``uvicorn --factory``. In-flight requests then finish within uvicorn's ``timeout_graceful_shutdown``
(``shutdown_grace_s``) and the process exits.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

from tabserve.serving.facade import ServedModels


def drain_on_sigterm(models: ServedModels, delay_s: float) -> Callable[[], None]:
    """Install the handler; returns what puts the previous one back. A no-op off the main thread (tests'
    in-process clients) or when no server handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return lambda: None
    loop = asyncio.get_running_loop()

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        first = not models.draining
        models.drain()
        if first and delay_s > 0:
            # Keep accepting while load balancers notice the 503s; a second SIGTERM stops at once.
            loop.call_soon_threadsafe(loop.call_later, delay_s, previous, sig, None)
        else:
            previous(sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore
