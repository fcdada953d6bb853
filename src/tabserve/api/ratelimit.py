"""Per-client rate limits: fixed windows counted in this process, or in Redis for several workers or replicas.

A client is an API key (its name) or, without keys, a client address. Every request costs 1 when it arrives
(so that bad requests are limited too); a prediction then costs its other rows once they are decoded, so a
batch of 100 rows costs 100. A window holds at most ``amount`` units; when a request does not fit it is
refused (429) and not counted, so a too-large batch does not lock out the client's small requests.

The memory counters are ours: ``limits``' own memory storage sweeps every key from a timer every 10 ms (a
cost that grows with the number of clients). Redis goes through ``limits``' storage (atomic Lua scripts,
sentinel and cluster URIs), imported only when configured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Scope

from tabserve.errors import ConfigError, RateLimited
from tabserve.observability.logging import get_logger

RATE = "tabserve.rate"  # scope key: (quota, remaining, seconds to reset) of the last charge, for the headers
CLIENT = "tabserve.client"  # scope key: (identity, quota), set by the guard, charged again by the endpoints
NO_LIMIT = "none"


@dataclass(frozen=True, slots=True)
class Quota:
    amount: int
    period_s: int
    text: str  # as configured, for messages
    prefix: str  # storage key prefix: a changed limit starts fresh counters
    limit_header: bytes
    policy_header: bytes  # RateLimit-Policy: "100;w=1"


def parse_quota(text: str | None, where: str = "TABSERVE_RATE_LIMIT") -> Quota | None:
    """``'100/second'``, ``'5000/minute'``, ``'10 per 5 minutes'``...; None or ``'none'``: no limit."""
    if text is None or text.strip().lower() in ("", NO_LIMIT):
        return None
    import limits  # only when a limit is configured

    try:
        items = limits.parse_many(text)
    except ValueError:
        raise ConfigError(f"{where} {text!r} is not a rate limit; write it like '100/second', '5000/minute' "
                          "or '10 per 5 minutes'") from None
    if len(items) != 1:
        raise ConfigError(f"{where} {text!r} holds {len(items)} limits; give one per client (the headers report "
                          "one window)")
    amount, period = int(items[0].amount), int(items[0].get_expiry())
    if amount < 1:
        raise ConfigError(f"{where} {text!r} allows nothing; use at least 1 per window, or 'none' for no limit")
    return Quota(amount, period, text.strip(), f"tabserve:{amount}/{period}s:", str(amount).encode(),
                 f"{amount};w={period}".encode())


class Counters(Protocol):
    asynchronous: bool

    def incr(self, key: str, period_s: int, cost: int) -> Any: ...  # (count, window end); awaitable if async

    def rollback(self, key: str, period_s: int, cost: int) -> Any: ...


class MemoryCounters:
    """Fixed windows in a dict: key -> [count, window end]; expired windows are swept as the dict grows."""

    asynchronous = False

    def __init__(self) -> None:
        self._windows: dict[str, list[Any]] = {}
        self._sweep_at = 4096

    def incr(self, key: str, period_s: int, cost: int) -> tuple[int, float]:
        now = time.time()
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            if len(self._windows) >= self._sweep_at:
                self._sweep(now)
            window = self._windows[key] = [0, now + period_s]
        window[0] += cost
        return window[0], window[1]

    def rollback(self, key: str, period_s: int, cost: int) -> None:
        window = self._windows.get(key)
        if window is not None:
            window[0] -= cost

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        self._sweep_at = max(4096, 2 * len(self._windows))


class RedisCounters:
    """Fixed windows in Redis through ``limits`` (INCRBY + EXPIRE in one Lua script): one round trip per charge;
    the window's end is asked once per window and remembered here."""

    asynchronous = True

    def __init__(self, uri: str) -> None:
        try:
            from limits.storage import storage_from_string
        except ImportError as exc:
            raise ConfigError(f"rate_limit_storage {uri!r} needs the limits package: pip install "
                              f"'tabserve[redis]' ({exc.name} is missing)") from None
        try:
            # A Redis that stops answering must not hold requests: short timeouts, then the limiter fails open.
            self.storage = storage_from_string(f"async+{uri}", implementation="redispy", socket_timeout=0.5,
                                               socket_connect_timeout=0.5)
        except Exception as exc:  # noqa: BLE001 - limits: ConfigurationError; redis: ImportError
            raise ConfigError(f"rate_limit_storage {uri!r} cannot be used: {exc}; pip install 'tabserve[redis]' "
                              "for Redis") from None
        self._ends: dict[str, float] = {}

    async def incr(self, key: str, period_s: int, cost: int) -> tuple[int, float]:
        count = int(await self.storage.incr(key, period_s, amount=cost))
        now = time.time()
        end = self._ends.get(key)
        if count == cost:  # this charge opened the window
            end = now + period_s
        elif end is None or end <= now:
            end = float(await self.storage.get_expiry(key))
        else:
            return count, end
        if len(self._ends) > 65536:
            self._ends = {k: e for k, e in self._ends.items() if e > now}
        self._ends[key] = end
        return count, end

    async def rollback(self, key: str, period_s: int, cost: int) -> None:
        await self.storage.incr(key, period_s, amount=-cost)


def counters_for(uri: str) -> Counters:
    scheme = uri.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryCounters()
    if scheme.startswith(("redis", "rediss")):
        return RedisCounters(uri)
    raise ConfigError(f"rate_limit_storage {uri!r}: use memory:// or redis://HOST:PORT/DB (rediss://, "
                      "redis+sentinel://, redis+cluster:// work too)")


class RateLimiter:
    def __init__(self, counters: Counters, default: Quota | None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.counters = counters
        self.default = default
        self.on_refused = on_refused  # metrics.rate_limited(key_kind): "api_key" or "ip"
        self._blocked: dict[str, float] = {}  # windows known to be spent: refused without asking the counters
        self._failing_since = 0.0
        self._bypass_until = 0.0  # after a storage error, let requests through for a second without waiting on it
        self.log = get_logger("tabserve.ratelimit")

    async def charge(self, scope: Scope, identity: str, quota: Quota, cost: int, *, batch: bool = False) -> None:
        """Count ``cost`` units for ``identity``; ``RateLimited`` when they do not fit in its window."""
        if self._bypass_until and time.monotonic() < self._bypass_until:
            return
        key = quota.prefix + identity
        now = time.time()
        blocked = self._blocked.get(key)
        if blocked is not None:
            if blocked > now:
                scope[RATE] = (quota, 0, blocked - now)
                raise self._refused(identity, quota, cost, 0, blocked - now, batch)
            del self._blocked[key]
        try:
            if self.counters.asynchronous:
                count, end = await self.counters.incr(key, quota.period_s, cost)
            else:
                count, end = self.counters.incr(key, quota.period_s, cost)
        except Exception as exc:  # noqa: BLE001 - a storage outage must not stop predictions: fail open
            self._storage_failed(exc)
            return
        now = time.time()  # after the round trip: the window's end was set from the same clock
        remaining = quota.amount - count
        if remaining >= 0:
            scope[RATE] = (quota, remaining, end - now)
            return
        left = max(0, remaining + cost)  # what the window holds without this request
        try:
            if self.counters.asynchronous:
                await self.counters.rollback(key, quota.period_s, cost)
            else:
                self.counters.rollback(key, quota.period_s, cost)
        except Exception as exc:  # noqa: BLE001
            self._storage_failed(exc)
        if left == 0:
            self._blocked[key] = end
            if len(self._blocked) > 65536:
                self._blocked = {k: e for k, e in self._blocked.items() if e > now}
        scope[RATE] = (quota, left, end - now)
        raise self._refused(identity, quota, cost, left, end - now, batch)

    async def charge_rows(self, scope: Scope, rows: int) -> None:
        """A prediction's rows beyond the 1 its request already paid at the door."""
        client = scope.get(CLIENT)
        if client is not None and rows > 1:
            await self.charge(scope, client[0], client[1], rows - 1, batch=True)

    def _refused(self, identity: str, quota: Quota, cost: int, left: int, reset_s: float,
                 batch: bool) -> RateLimited:
        if self.on_refused is not None:
            self.on_refused("api_key" if identity.startswith("key:") else "ip")
        reset = max(1, math.ceil(reset_s - 0.001))
        if batch and cost >= quota.amount:
            message = (f"this request has {cost + 1} rows but the rate limit is {quota.text} (each row counts): "
                       "split the batch")
        elif batch:
            message = (f"rate limit {quota.text} reached: this request has {cost + 1} rows and {left} remain in "
                       f"this window; retry in {reset} s or send fewer rows")
        else:
            message = f"rate limit {quota.text} reached (each prediction row counts); retry in {reset} s"
        return RateLimited(message, limit=quota.amount, remaining=left, reset=reset)

    def _storage_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._bypass_until = now + 1.0
        if now - self._failing_since > 10:  # once per 10 s, not per request
            self._failing_since = now
            self.log.error("rate_limit_storage_failed", error=f"{type(exc).__name__}: {exc}",
                           effect="requests are let through unlimited until the storage answers")


def rate_headers(scope: Scope) -> list[tuple[bytes, bytes]] | None:
    """The IETF draft's RateLimit-* fields for the last charge of this request."""
    rate = scope.get(RATE)
    if rate is None:
        return None
    quota, remaining, reset_s = rate
    return [(b"ratelimit-limit", quota.limit_header), (b"ratelimit-remaining", str(remaining).encode()),
            (b"ratelimit-reset", str(max(0, math.ceil(reset_s - 0.001))).encode()),
            (b"ratelimit-policy", quota.policy_header)]
