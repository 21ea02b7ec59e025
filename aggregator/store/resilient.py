"""Redis while it answers, the in-process cache while it does not, and back without a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from redis.exceptions import OutOfMemoryError

from aggregator.store.memory import MemoryCache
from aggregator.store.redis_cache import RedisCache, pool_exhausted, redis_failed

log = logging.getLogger(__name__)


T = TypeVar("T")
FULL_LOG_EVERY = 60.0  # seconds between two log lines about a full Redis


class ResilientCache:
    """Redis while it answers; the in-process cache while it does not.

    After a failure Redis is left alone for `retry_seconds`, so an outage
    costs one connect timeout per interval rather than one per request. Both
    changes of state are logged once (never with the URL: it may hold a password).
    """

    def __init__(
        self,
        redis_cache: RedisCache,
        memory: MemoryCache,
        retry_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis_cache
        self.memory = memory
        self.retry_seconds = retry_seconds
        self._clock = clock
        self.redis_up = True
        self._retry_at = 0.0
        self.full_refusals = 0  # writes Redis refused because it was full, since start
        self._full_logged_at = -FULL_LOG_EVERY
        # Keys this process `add`ed (locks, leases) and where: each is released in the store
        # that holds it, even if the cache switched since (else Redis keeps an orphaned lock).
        self._added_in_redis: set[str] = set()

    async def _either(self, on_redis: Callable[[], Awaitable[T]], on_memory: Callable[[], Awaitable[T]]) -> T:
        if not self.redis_up and self._clock() < self._retry_at:
            return await on_memory()
        try:
            result = await on_redis()
        except Exception as exc:
            if isinstance(exc, OutOfMemoryError):
                # Redis is full (maxmemory, noeviction) and refused a write: it still answers, so
                # reads go on using it; this write goes to memory. One line a minute, and /metrics.
                self.full_refusals += 1
                if self._clock() >= self._full_logged_at + FULL_LOG_EVERY:
                    self._full_logged_at = self._clock()
                    log.warning(
                        "Redis is full (maxmemory): writes it refuses go to the in-process cache "
                        "(%d refused so far); reads still use Redis",
                        self.full_refusals,
                    )
                return await on_memory()
            if pool_exhausted(exc):
                # Every connection stayed busy for redis_timeout: this one command is answered
                # from memory, but Redis is not down and nothing is switched or disconnected.
                log.warning("Redis connection pool exhausted: one command answered from memory")
                return await on_memory()
            if not redis_failed(exc):
                raise
            if self.redis_up:
                log.warning("Redis unreachable (%s): answering from the in-process cache", type(exc).__name__)
            self.redis_up = False
            self._retry_at = self._clock() + self.retry_seconds
            await self.redis.reset()
            return await on_memory()
        if not self.redis_up:
            log.warning("Redis answers again: using it")
            self.redis_up = True
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._either(lambda: self.redis.get(key), lambda: self.memory.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._either(lambda: self.redis.get_many(keys), lambda: self.memory.get_many(keys))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._either(lambda: self.redis.set(key, value, ttl), lambda: self.memory.set(key, value, ttl))

    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: float) -> None:
        items = list(items)
        await self._either(lambda: self.redis.set_many(items, ttl), lambda: self.memory.set_many(items, ttl))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        in_redis = False  # where the key went, as the command that wrote it says

        async def on_redis() -> bool:
            nonlocal in_redis
            added = await self.redis.add(key, value, ttl)
            in_redis = True
            return added

        added = await self._either(on_redis, lambda: self.memory.add(key, value, ttl))
        if added and in_redis:
            self._added_in_redis.add(key)
        return added

    async def delete(self, key: str) -> None:
        await self._either(lambda: self.redis.delete(key), lambda: self.memory.delete(key))

    async def delete_if(self, key: str, value: bytes) -> bool:
        if key in self._added_in_redis:
            self._added_in_redis.discard(key)
            try:  # where it was taken, whatever the cache answers from now
                return await self.redis.delete_if(key, value)
            except Exception as exc:
                if not (redis_failed(exc) or pool_exhausted(exc)):
                    raise
                return False  # Redis lets it go by its TTL
        return await self._either(
            lambda: self.redis.delete_if(key, value), lambda: self.memory.delete_if(key, value)
        )

    async def extend_if(self, key: str, value: bytes, ttl: float) -> bool:
        return await self._either(
            lambda: self.redis.extend_if(key, value, ttl), lambda: self.memory.extend_if(key, value, ttl)
        )

    async def incr(self, key: str, ttl: float) -> int:
        return await self._either(lambda: self.redis.incr(key, ttl), lambda: self.memory.incr(key, ttl))

    async def enqueue(self, key: str, members: Sequence[str], ttl: float) -> None:
        await self._either(
            lambda: self.redis.enqueue(key, members, ttl), lambda: self.memory.enqueue(key, members, ttl)
        )

    async def dequeue(self, key: str, count: int) -> list[str]:
        return await self._either(
            lambda: self.redis.dequeue(key, count), lambda: self.memory.dequeue(key, count)
        )

    async def queue_size(self, key: str) -> int:
        return await self._either(lambda: self.redis.queue_size(key), lambda: self.memory.queue_size(key))

    async def schedule(self, key: str, members: Mapping[str, float], ttl: float) -> None:
        await self._either(
            lambda: self.redis.schedule(key, members, ttl), lambda: self.memory.schedule(key, members, ttl)
        )

    async def scheduled(self, key: str, until: float, count: int) -> list[tuple[str, float]]:
        return await self._either(
            lambda: self.redis.scheduled(key, until, count),
            lambda: self.memory.scheduled(key, until, count),
        )

    async def schedule_size(self, key: str) -> int:
        return await self._either(
            lambda: self.redis.schedule_size(key), lambda: self.memory.schedule_size(key)
        )

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        await self._either(
            lambda: self.redis.unschedule(key, members), lambda: self.memory.unschedule(key, members)
        )

    async def keep_latest(self, key: str, items: Sequence[bytes], keep: int, ttl: float) -> None:
        await self._either(
            lambda: self.redis.keep_latest(key, items, keep, ttl),
            lambda: self.memory.keep_latest(key, items, keep, ttl),
        )

    async def latest(self, key: str) -> list[bytes]:
        return await self._either(lambda: self.redis.latest(key), lambda: self.memory.latest(key))

    async def add_counts(self, key: str, counts: Mapping[str, int], ttl: float) -> None:
        await self._either(
            lambda: self.redis.add_counts(key, counts, ttl), lambda: self.memory.add_counts(key, counts, ttl)
        )

    async def counts(self, key: str) -> dict[str, int]:
        return await self._either(lambda: self.redis.counts(key), lambda: self.memory.counts(key))

    async def tally(self, key: str, name: str, since: str, cap: int, ttl: float) -> int:
        return await self._either(
            lambda: self.redis.tally(key, name, since, cap, ttl),
            lambda: self.memory.tally(key, name, since, cap, ttl),
        )

    def describe(self) -> str:
        return "redis" if self.redis_up else "memory (Redis unreachable)"
