"""Numbered progress lines for the long commands (train, import), with how long each step took."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[str], None]


@dataclass(slots=True)
class Steps:
    """``[k/total] +elapsed text`` lines through ``progress``, and the seconds each step took."""

    progress: Progress | None
    total: int
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    _current: str | None = None
    _since: float = 0.0

    def begin(self, key: str) -> None:
        now = time.perf_counter()
        self._close(now)
        self._current, self._since = key, now

    def say(self, text: str) -> None:
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress(f"[{len(self.timings) + 1}/{self.total}] +{elapsed:.2f}s {text}")

    def finish(self) -> dict[str, float]:
        now = time.perf_counter()
        self._close(now)
        self.timings["total"] = now - self.started
        return self.timings

    def _close(self, now: float) -> None:
        if self._current is not None:
            self.timings[self._current] = now - self._since
