"""An exact moving-window limiter in Redis that keeps counting in memory while Redis is away.

Both the upstream budget (per org key) and the caller limits (per client or
address) count this way: the `limits` library's moving window, whose Redis
Lua script keeps a log of timestamps, so N processes share one count. When
Redis fails, each process counts alone against its own share of the figure
until `retry_seconds` have passed, then tries Redis again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from aggregator import cache as cache_keys
from aggregator.config import CacheConfig
from aggregator.model import Clock

log = logging.getLogger(__name__)
_STORAGE_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


class Limiter:
    """`item` is the shared figure, `local` the share a process may use alone."""

    def __init__(self, shared: RedisStorage | None, retry_seconds: float, clock: Clock = time.time) -> None:
        self._shared = MovingWindowRateLimiter(shared) if shared is not None else None
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._down_until = 0.0

    async def hit(
        self, item: RateLimitItem, local: RateLimitItem, ident: str, cost: int = 1, keep: int = 0
    ) -> bool:
        """Take `cost`, but only while at least `keep` more would still be left; False takes nothing."""
        try:
            return await self._hit(*self._pick(item, local), ident, cost, keep)
        except _STORAGE_ERRORS as exc:
            self._failed(exc)
            return await self._hit(self._local, local, ident, cost, keep)

    async def hit_up_to(
        self, item: RateLimitItem, local: RateLimitItem, ident: str, wanted: int, keep: int = 0
    ) -> int:
        """Take as many of `wanted` as leave `keep`; how many were taken. Two round trips, whatever `wanted`."""
        _, left, _ = await self.remaining(item, local, ident)
        granted = min(wanted, left - keep)
        if granted <= 0:
            return 0
        # Another process may have taken some meanwhile: then take one at a time what is still there.
        if await self.hit(item, local, ident, cost=granted, keep=keep):
            return granted
        taken = 0
        while taken < granted and await self.hit(item, local, ident, keep=keep):
            taken += 1
        return taken

    async def remaining(
        self, item: RateLimitItem, local: RateLimitItem, ident: str
    ) -> tuple[int, int, float]:
        """(figure in force, what is left of it, epoch seconds when the oldest request leaves the window)."""
        limiter, chosen = self._pick(item, local)
        try:
            stats = await limiter.get_window_stats(chosen, ident)
        except _STORAGE_ERRORS as exc:
            self._failed(exc)
            limiter, chosen = self._local, local
            stats = await limiter.get_window_stats(chosen, ident)
        return chosen.amount, max(0, stats.remaining), stats.reset_time

    def _pick(
        self, item: RateLimitItem, local: RateLimitItem
    ) -> tuple[MovingWindowRateLimiter, RateLimitItem]:
        if self._shared is not None and self._clock() >= self._down_until:
            return self._shared, item
        return self._local, local

    @staticmethod
    async def _hit(
        limiter: MovingWindowRateLimiter, item: RateLimitItem, ident: str, cost: int, keep: int
    ) -> bool:
        if keep and not await limiter.test(item, ident, cost=cost + keep):
            return False
        return await limiter.hit(item, ident, cost=cost)

    def _failed(self, exc: BaseException) -> None:
        if self._clock() < self._down_until:
            return  # already counting alone (requests that were under way when Redis went)
        log.warning("rate limits: Redis unreachable (%s): counting this process's share", type(exc).__name__)
        self._down_until = self._clock() + self._retry_seconds


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
    options = {k: v for k, v in cache_keys.redis_options(config).items() if v is not None}
    kind = RedisClusterStorage if config.redis_cluster else RedisStorage
    storage = kind(
        uri, implementation="redispy", key_prefix=cache_keys.NAMESPACE, wrap_exceptions=True, **options
    )
    try:
        yield storage
    finally:
        with suppress(Exception):
            # limits keeps its redis-py client on the bridge, untyped, and has no close of its own.
            await cast(Any, storage.bridge).storage.aclose()
