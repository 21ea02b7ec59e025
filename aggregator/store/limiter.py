"""An exact moving-window limiter in Redis that keeps counting in memory while Redis is away.

The caller limits (per client or address) count this way: the `limits` library's
moving window, whose Redis Lua script keeps a log of timestamps, so N processes
share one count. (The upstream budget holds units past their request's answer,
which `limits` cannot express: `store.held`.) When
Redis fails, each process counts alone against its own share of the figure
until `retry_seconds` have passed, then tries Redis again.

That local count is our own (`MemoryWindows`), not limits' in-memory
storage: that one expires its logs through `asyncio.to_thread` after every
hit, so a thread would share the GIL with the event loop on every request
counted, and it reads the wall clock rather than the injected one.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

from limits import RateLimitItem
from limits.aio.storage import RedisClusterStorage, RedisSentinelStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from aggregator.config import SENTINEL_SCHEMES, CacheConfig, sentinel_url
from aggregator.model import Clock
from aggregator.store.keys import NAMESPACE
from aggregator.store.redis_cache import redis_failed, redis_options

log = logging.getLogger(__name__)


class Limiter:
    """`item` is the shared figure, `local` the share a process may use alone."""

    def __init__(self, shared: RedisStorage | None, retry_seconds: float, clock: Clock = time.time) -> None:
        self._shared = MovingWindowRateLimiter(shared) if shared is not None else None
        self._local = MemoryWindows(clock)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until = 0.0

    async def hit(self, item: RateLimitItem, local: RateLimitItem, ident: str) -> bool:
        """Count one request if it fits the window; False counts nothing."""
        if (shared := self._shared_now()) is not None:
            try:
                return await shared.hit(item, ident)
            except Exception as exc:
                if not _storage_failed(exc):
                    raise
                self._failed(exc)
        return self._local.hit(local, ident)

    async def remaining(
        self, item: RateLimitItem, local: RateLimitItem, ident: str
    ) -> tuple[int, int, float]:
        """(figure in force, what is left of it, epoch seconds when the oldest request leaves the window)."""
        if (shared := self._shared_now()) is not None:
            try:
                stats = await shared.get_window_stats(item, ident)
                return item.amount, max(0, stats.remaining), stats.reset_time
            except Exception as exc:
                if not _storage_failed(exc):
                    raise
                self._failed(exc)
        left, reset = self._local.stats(local, ident)
        return local.amount, left, reset

    def _shared_now(self) -> MovingWindowRateLimiter | None:
        """The shared count, unless Redis failed less than `retry_seconds` ago (or there is none)."""
        return self._shared if self._clock() >= self._down_until else None

    def _failed(self, exc: Exception) -> None:
        if self._clock() < self._down_until:
            return  # already counting alone (requests that were under way when Redis went)
        log.warning("rate limits: Redis unreachable (%s): counting this process's share", type(exc).__name__)
        self._down_until = self._clock() + self._retry_seconds


def _storage_failed(exc: Exception) -> bool:
    # limits wraps redis-py's own errors in StorageError, but not its close race (`cache.redis_failed`).
    return isinstance(exc, StorageError) or redis_failed(exc)


class _Log:
    """One key's moving window: (time, cost) of each request still inside it, oldest first."""

    __slots__ = ("entries", "seconds", "total")

    def __init__(self, seconds: int) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.seconds = seconds
        self.total = 0

    def forget_before(self, cutoff: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= cutoff:
            self.total -= entries.popleft()[1]


class MemoryWindows:
    """The moving windows a process keeps alone, the same rule as limits' Redis script.

    A request of `cost` fits when the requests of the last `item` window plus
    `cost` stay within `item.amount`. Each key's log costs one pair per
    request in the window; a key's whole log goes once its newest request has
    left its window, oldest-used keys first, so memory follows the callers of
    the last window, not every caller ever seen. Every step is O(1) amortised.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._logs: OrderedDict[str, _Log] = OrderedDict()  # least recently hit first

    def hit(self, item: RateLimitItem, ident: str, cost: int = 1, keep: int = 0) -> bool:
        """Take `cost` if `cost + keep` fit in the window; False takes nothing."""
        now = self._clock()
        key = item.key_for(ident)
        log = self._log(key, item, now)
        if log.total + cost + keep > item.amount:
            return False
        log.entries.append((now, cost))
        log.total += cost
        self._logs[key] = log
        self._logs.move_to_end(key)
        self._drop_idle(now)
        return True

    def stats(self, item: RateLimitItem, ident: str) -> tuple[int, float]:
        """(what is left in the window, epoch seconds when its oldest request leaves it)."""
        now = self._clock()
        log = self._log(item.key_for(ident), item, now)
        oldest = log.entries[0][0] if log.entries else now
        return max(0, item.amount - log.total), oldest + log.seconds

    def __len__(self) -> int:
        return len(self._logs)

    def _log(self, key: str, item: RateLimitItem, now: float) -> _Log:
        log = self._logs.get(key) or _Log(item.get_expiry())
        log.forget_before(now - log.seconds)
        return log

    def _drop_idle(self, now: float) -> None:
        logs = self._logs
        while logs:
            log = next(iter(logs.values()))
            if log.entries and log.entries[-1][0] > now - log.seconds:
                return
            logs.popitem(last=False)


@asynccontextmanager
async def shared_storage(config: CacheConfig) -> AsyncIterator[RedisStorage | None]:
    """The `limits` storage on the configured Redis, under our namespace; None without Redis."""
    if not config.redis_url:
        yield None
        return
    url = config.redis_url
    # limits names the unix-socket scheme async+redis+unix://.
    uri = "async+redis+" + url if url.startswith("unix://") else "async+" + url
    if config.redis_cluster:
        uri = "async+redis+cluster://" + url.split("://", 1)[1].split("/", 1)[0]
    options = {k: v for k, v in redis_options(config).items() if v is not None}
    kind: type[RedisStorage] | type[RedisClusterStorage] | type[RedisSentinelStorage]
    kind = RedisClusterStorage if config.redis_cluster else RedisStorage
    extra: dict[str, Any] = {}
    if url.startswith(SENTINEL_SCHEMES):
        # limits' own Sentinel storage: the same Sentinels, the primary only (a replica's count lags).
        sentinel = sentinel_url(url)
        hosts = ",".join(f"{host}:{port}" for host, port in sentinel.sentinels)
        uri = f"async+redis+sentinel://{hosts}/{sentinel.service_name}"
        kind = RedisSentinelStorage
        extra = {"use_replicas": False, "db": sentinel.db}
        if sentinel.password:
            extra.update(password=sentinel.password, sentinel_kwargs={"password": sentinel.password})
        if sentinel.username:
            extra["username"] = sentinel.username
        if sentinel.tls:
            extra["ssl"] = True
    storage = kind(
        uri, implementation="redispy", key_prefix=NAMESPACE, wrap_exceptions=True, **options, **extra
    )
    try:
        yield storage
    finally:
        with suppress(Exception):
            # limits keeps its redis-py client on the bridge, untyped, and has no close of its own.
            await cast(Any, storage.bridge).storage.aclose()
