"""The cache every process reads: bytes under namespaced keys, each with a TTL.

Two backends behind one interface: `MemoryCache` (in-process, bounded, least
recently used goes first) and `RedisCache` (shared by every replica). A
service configured with Redis uses `ResilientCache`, which falls back to
memory while Redis is unreachable and goes back to Redis when it answers
again, without a restart.

Keys are built only by `key()`: namespaced, versioned, and made of ids,
randtags and digests of queries, never of an org key or a client token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from aggregator.config import CacheConfig
from aggregator.loop.turns import in_turns

log = logging.getLogger(__name__)
NAMESPACE = "ilosagg:v3"  # v3: answers stored as JSON lines; v2: duration_pending, breakers, budgets
T = TypeVar("T")


# Where redis-py and asyncio's transports live: see `redis_failed`.
_CLIENT_CODE = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (aioredis, asyncio))


def redis_failed(exc: BaseException) -> bool:
    """Whether `exc` means Redis (or the way to it) failed, rather than a bug of ours.

    Besides redis-py's own errors, timeouts and socket errors, that is the
    AttributeError or TypeError redis-py raises when a connection is closed
    under a command: its writer is gone, and the call fails inside redis-py or
    asyncio's transport instead of raising ConnectionError (redis/redis-py
    issues 3546 and 4287). A cluster that loses a node closes connections
    under running commands, and one such error cost an org its whole search.
    Only errors raised from inside that code count: the same errors from ours
    stay bugs.
    """
    if isinstance(exc, (TimeoutError, RedisError, OSError)):
        return True
    if not isinstance(exc, (AttributeError, TypeError)) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_CLIENT_CODE)


def key(kind: str, *parts: str) -> str:
    return ":".join((NAMESPACE, kind, *parts))


async def hold_lease(cache: Cache, name: str, token: bytes, ttl: float) -> bool:
    """Whether this process (`token`) holds the lease `name`: renewed if it did, taken if free.

    One process across all replicas does a shared chore (deferred lookups,
    refreshes); if it dies, another takes over within `ttl`.
    """
    lease = key("lease", name)
    return await cache.extend_if(lease, token, ttl) or await cache.add(lease, token, ttl)


def query_digest(text: str) -> str:
    """A short stable digest, so user text never becomes a raw key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


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
    def describe(self) -> str: ...


ENTRY_OVERHEAD = 160  # bytes an entry costs beyond its key and value (tuple, dict slot, floats)


def approximate_size(value: Any) -> int:
    """Bytes a cached value holds, near enough to bound memory: exact for bytes, estimated otherwise."""
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    nbytes = getattr(value, "nbytes", None)  # rendered pages say what they hold
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, dict):
        return sum(len(str(k)) + 64 for k in value)
    return 64


class MemoryCache:
    """In-process and bounded in bytes; expired and least recently used entries go first.

    Values are usually bytes, but any object can be kept (the rendered-page
    cache keeps whole responses); `approximate_size` weighs them.
    """

    def __init__(
        self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # what the entries weigh now
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def get_now(self, key: str) -> Any:
        """Synchronous read, for hot paths that must not yield to the loop."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value, size = item
        if expires <= self._clock():
            del self._data[key]
            self.bytes -= size
            return None
        self._data.move_to_end(key)
        return value

    def set_now(self, key: str, value: Any, ttl: float) -> None:
        size = len(key) + approximate_size(value) + ENTRY_OVERHEAD
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        if size > self.max_bytes:
            return  # larger than the whole cache: not kept at all
        self._data[key] = (self._clock() + ttl, value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, evicted) = self._data.popitem(last=False)
            self.bytes -= evicted

    async def get(self, key: str) -> Any:
        return self.get_now(key)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        # In turns of the loop: the 500 durations of a cold answer took ~3 ms here, on top
        # of what came before them in the same step (bench.turntrace's light mode, soak).
        return await in_turns(keys, self.get_now)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.set_now(key, value, ttl)

    async def set_many(self, items: Iterable[tuple[str, Any]], ttl: float) -> None:
        await in_turns(items, lambda item: self.set_now(item[0], item[1], ttl))

    async def add(self, key: str, value: Any, ttl: float) -> bool:
        if self.get_now(key) is not None:
            return False
        self.set_now(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]

    async def delete_if(self, key: str, value: Any) -> bool:
        if self.get_now(key) != value:
            return False
        await self.delete(key)
        return True

    async def extend_if(self, key: str, value: Any, ttl: float) -> bool:
        if self.get_now(key) != value:
            return False
        self.set_now(key, value, ttl)
        return True

    async def incr(self, key: str, ttl: float) -> int:
        count = int(self.get_now(key) or 0) + 1
        self.set_now(key, count, ttl)
        return count

    async def enqueue(self, key: str, members: Sequence[str], ttl: float) -> None:
        queue = self.get_now(key)
        if not isinstance(queue, OrderedDict):
            queue = OrderedDict()
        for member in members:
            queue.setdefault(member, None)
        self.set_now(key, queue, ttl)

    async def dequeue(self, key: str, count: int) -> list[str]:
        queue = self.get_now(key)
        if not isinstance(queue, OrderedDict):
            return []
        return [queue.popitem(last=False)[0] for _ in range(min(count, len(queue)))]

    async def queue_size(self, key: str) -> int:
        queue = self.get_now(key)
        return len(queue) if isinstance(queue, OrderedDict) else 0

    async def schedule(self, key: str, members: Mapping[str, float], ttl: float) -> None:
        times = self.get_now(key)
        if not isinstance(times, dict):
            times = {}
        times.update(members)
        self.set_now(key, times, ttl)

    async def scheduled(self, key: str, until: float, count: int) -> list[tuple[str, float]]:
        times = self.get_now(key)
        if not isinstance(times, dict):
            return []
        return sorted(((m, t) for m, t in times.items() if t <= until), key=lambda mt: (mt[1], mt[0]))[:count]

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        times = self.get_now(key)
        if isinstance(times, dict):
            for member in members:
                times.pop(member, None)

    def describe(self) -> str:
        return "memory"


class RedisCache:
    """One Redis, or a Redis Cluster (`cache.redis_cluster`).

    Every multi-key command here touches keys that may live in different slots
    of a cluster: reads go through the cluster client's non-atomic MGET (one
    MGET per node), and pipelines are per key. Nothing needs them atomic.
    """

    def __init__(self, client: aioredis.Redis | aioredis.RedisCluster) -> None:
        self.client = client
        self.cluster = isinstance(client, aioredis.RedisCluster)

    # The client is made without decode_responses, so values come back as bytes;
    # redis-py's annotations allow str too, hence the casts.
    async def get(self, key: str) -> bytes | None:
        return cast("bytes | None", await self.client.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        if isinstance(self.client, aioredis.RedisCluster):
            return cast("list[bytes | None]", list(await self.client.mget_nonatomic(keys)))
        return cast("list[bytes | None]", list(await self.client.mget(keys)))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.client.set(key, value, px=_px(ttl))

    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: float) -> None:
        items = list(items)
        if not items:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for k, v in items:
                pipe.set(k, v, px=_px(ttl))
            await pipe.execute()

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self.client.set(key, value, px=_px(ttl), nx=True))

    async def delete(self, key: str) -> None:
        await self.client.delete(key)

    async def delete_if(self, key: str, value: bytes) -> bool:
        return bool(await self.client.eval(_DELETE_IF, 1, key, value))

    async def extend_if(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self.client.eval(_EXTEND_IF, 1, key, value, _px(ttl)))

    async def incr(self, key: str, ttl: float) -> int:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, _px(ttl))
            count, _ = await pipe.execute()
        return int(count)

    async def enqueue(self, key: str, members: Sequence[str], ttl: float) -> None:
        if not members:
            return
        # Scores are the order of arrival; NX keeps an earlier place for a member already queued.
        now = time.time()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {m: now + i * 1e-6 for i, m in enumerate(members)}, nx=True)
            pipe.pexpire(key, _px(ttl))
            await pipe.execute()

    async def dequeue(self, key: str, count: int) -> list[str]:
        popped = cast("list[tuple[bytes, float]]", await self.client.zpopmin(key, count))
        return [member.decode() if isinstance(member, bytes) else str(member) for member, _ in popped]

    async def queue_size(self, key: str) -> int:
        return int(await self.client.zcard(key))

    async def schedule(self, key: str, members: Mapping[str, float], ttl: float) -> None:
        if not members:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, dict(members))
            pipe.pexpire(key, _px(ttl))
            await pipe.execute()

    async def scheduled(self, key: str, until: float, count: int) -> list[tuple[str, float]]:
        found = cast(
            "list[tuple[bytes, float]]",
            await self.client.zrangebyscore(key, "-inf", until, start=0, num=count, withscores=True),
        )
        return [(m.decode() if isinstance(m, bytes) else str(m), float(t)) for m, t in found]

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        if members:
            await self.client.zrem(key, *members)

    def describe(self) -> str:
        return "redis"

    async def reset(self) -> None:
        """Drop pooled connections: after an outage they are all dead."""
        if isinstance(self.client, aioredis.RedisCluster):
            return  # the cluster client re-reads its topology and reconnects by itself
        with suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect()


# Compare-and-act scripts: the GET and the DEL (or PEXPIRE) must be one step, or a
# lock that expired between them could be another process's by the time we act.
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_EXTEND_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


def _px(ttl: float) -> int:
    """A TTL in seconds as Redis PX milliseconds; never 0, which Redis refuses."""
    return max(1, int(ttl * 1000))


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

    async def _either(self, on_redis: Callable[[], Awaitable[T]], on_memory: Callable[[], Awaitable[T]]) -> T:
        if not self.redis_up and self._clock() < self._retry_at:
            return await on_memory()
        try:
            result = await on_redis()
        except Exception as exc:
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
        return await self._either(
            lambda: self.redis.add(key, value, ttl), lambda: self.memory.add(key, value, ttl)
        )

    async def delete(self, key: str) -> None:
        await self._either(lambda: self.redis.delete(key), lambda: self.memory.delete(key))

    async def delete_if(self, key: str, value: bytes) -> bool:
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

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        await self._either(
            lambda: self.redis.unschedule(key, members), lambda: self.memory.unschedule(key, members)
        )

    def describe(self) -> str:
        return "redis" if self.redis_up else "memory (Redis unreachable)"


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


def redis_options(config: CacheConfig) -> dict[str, Any]:
    """What every Redis client of the service is made with: timeouts, pool size and TLS files."""
    options: dict[str, Any] = {
        "socket_connect_timeout": config.redis_connect_timeout,
        "socket_timeout": config.redis_timeout,
        "max_connections": config.redis_pool_size,
        # One immediate retry: on a fresh connection (a pooled one died with a Redis restart), or,
        # in a cluster, on a freshly read slot map (a node failed over). Anything longer is an
        # outage for ResilientCache and the limiter. redis-py's cluster default is ten retries,
        # each a quarter of a second after CLUSTERDOWN: 2.5 s of waiting in one command, half
        # a search's deadline.
        "retry": Retry(NoBackoff(), 1),
    }
    if config.redis_url and config.redis_url.startswith("rediss://"):
        options.update(
            ssl_ca_certs=config.redis_ca, ssl_certfile=config.redis_cert, ssl_keyfile=config.redis_key
        )
    return options


def redis_client(config: CacheConfig) -> aioredis.Redis | aioredis.RedisCluster:
    """Short timeouts: a cache that makes requests wait is worse than no cache."""
    assert config.redis_url is not None
    if config.redis_cluster:
        return aioredis.RedisCluster.from_url(config.redis_url, **redis_options(config))
    return aioredis.Redis.from_url(
        config.redis_url,
        retry_on_error=[RedisConnectionError],
        health_check_interval=15,
        **redis_options(config),
    )
