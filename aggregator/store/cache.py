"""The cache every process reads: bytes under namespaced keys, each with a TTL.

Two backends behind one interface: `MemoryCache` (in-process, bounded, least
recently used goes first) and `RedisCache` (shared by every replica). A
service configured with Redis uses `ResilientCache`, which falls back to
memory while Redis is unreachable and goes back to Redis when it answers
again, without a restart.

Keys are built only by `keys.key()`. The backends live in `memory`, `redis_cache`
and `resilient`; this module is the interface and the choice between them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from aggregator.config import CacheConfig
from aggregator.store.keys import key
from aggregator.store.memory import MemoryCache
from aggregator.store.redis_cache import RedisCache, redis_client
from aggregator.store.resilient import ResilientCache


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def delete_if(self, key: str, value: bytes) -> bool:
        """Delete `key` only while it holds `value` (a lock's owner releasing it), atomically."""
        ...

    async def extend_if(self, key: str, value: bytes, ttl: float) -> bool:
        """Give `key` a new TTL only while it holds `value` (a lease renewed by its holder)."""
        ...

    async def incr(self, key: str, ttl: float) -> int:
        """Add one and return the count; the key expires `ttl` after the last increment."""
        ...

    async def enqueue(self, key: str, members: Sequence[str], ttl: float) -> None:
        """Add members to a queue without duplicates; a member already queued keeps its place."""
        ...

    async def dequeue(self, key: str, count: int) -> list[str]:
        """Take up to `count` members, oldest first."""
        ...

    async def queue_size(self, key: str) -> int: ...
    async def schedule(self, key: str, members: Mapping[str, float], ttl: float) -> None:
        """Set each member's time (a sorted set), keeping the whole set `ttl` from now."""
        ...

    async def scheduled(self, key: str, until: float, count: int) -> list[tuple[str, float]]:
        """Up to `count` members whose time is at most `until`, earliest first (nothing removed)."""
        ...

    async def unschedule(self, key: str, members: Sequence[str]) -> None: ...
    async def schedule_size(self, key: str) -> int:
        """How many members the sorted set holds, without reading them."""
        ...

    async def add_counts(self, key: str, counts: Mapping[str, int], ttl: float) -> None:
        """Add to named counters kept together under `key` (a Redis hash)."""

    async def keep_latest(self, key: str, items: Sequence[bytes], keep: int, ttl: float) -> None:
        """Add `items` to the list under `key`, newest first, keeping its `keep` newest."""
        ...

    async def latest(self, key: str) -> list[bytes]:
        """The list under `key`, newest first."""
        ...

    async def counts(self, key: str) -> dict[str, int]: ...
    async def tally(self, key: str, name: str, since: str, cap: int, ttl: float) -> int:
        """Add one to counter `name` under `key` (unless `key` holds `cap` counters and not this
        one), and return it plus `name`'s count under `since`, the period before (0 if none)."""
        ...

    def describe(self) -> str: ...


async def hold_lease(cache: Cache, name: str, token: bytes, ttl: float) -> bool:
    """Whether this process (`token`) holds the lease `name`: renewed if it did, taken if free.

    One process across all replicas does a shared chore (deferred lookups,
    refreshes); if it dies, another takes over within `ttl`.
    """
    lease = key("lease", name)
    return await cache.extend_if(lease, token, ttl) or await cache.add(lease, token, ttl)


@asynccontextmanager
async def from_config(config: CacheConfig, clock: Callable[[], float] = time.time) -> AsyncIterator[Cache]:
    """The cache a process uses: Redis with the in-process fallback, or memory alone.

    `clock` decides the in-process entries' expiry and when Redis is tried
    again after an outage.
    """
    memory = MemoryCache(data_share(config.memory_max_bytes), clock)
    if not config.redis_url:
        yield memory
        return
    client = redis_client(config)
    try:
        yield ResilientCache(RedisCache(client), memory, config.redis_retry_seconds, clock)
    finally:
        await client.aclose()


def data_share(memory_max_bytes: int) -> int:
    """Of `cache.memory_max_bytes`, what org answers, durations and records may use in process."""
    return memory_max_bytes * 3 // 4


def pages_share(memory_max_bytes: int) -> int:
    """Of `cache.memory_max_bytes`, what rendered pages may use (web's page cache)."""
    return memory_max_bytes - data_share(memory_max_bytes)


def redis_unreachable(cache: Cache) -> bool:
    """Redis is configured but not answering: the in-process cache stands in."""
    return isinstance(cache, ResilientCache) and not cache.redis_up
