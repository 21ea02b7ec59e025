"""The cache every replica shares, in Redis (or a Redis Cluster), and how its client is made."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from aggregator.config import SENTINEL_SCHEMES, CacheConfig, sentinel_url

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

    async def schedule_size(self, key: str) -> int:
        return int(await self.client.zcard(key))

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        if members:
            await self.client.zrem(key, *members)

    async def keep_latest(self, key: str, items: Sequence[bytes], keep: int, ttl: float) -> None:
        if not items:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, *items)
            pipe.ltrim(key, 0, keep - 1)
            pipe.pexpire(key, _px(ttl))
            await pipe.execute()

    async def latest(self, key: str) -> list[bytes]:
        return cast("list[bytes]", await self.client.lrange(key, 0, -1))

    async def add_counts(self, key: str, counts: Mapping[str, int], ttl: float) -> None:
        if not counts:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for name, n in counts.items():
                pipe.hincrby(key, name, n)
            pipe.pexpire(key, _px(ttl))
            await pipe.execute()

    async def counts(self, key: str) -> dict[str, int]:
        raw = cast("dict[bytes, bytes]", await self.client.hgetall(key))
        out = {}
        for name, value in raw.items():
            try:
                out[name.decode()] = int(value)
            except (UnicodeDecodeError, ValueError):
                continue
        return out

    async def tally(self, key: str, name: str, since: str, cap: int, ttl: float) -> int:
        return int(await self.client.eval(_TALLY, 2, key, since, name, cap, _px(ttl)))

    def describe(self) -> str:
        return "redis"

    async def reset(self) -> None:
        """Drop the idle pooled connections: after an outage they are dead. Connections in use
        are left to their commands, which fail or finish on their own."""
        if isinstance(self.client, aioredis.RedisCluster):
            return  # the cluster client re-reads its topology and reconnects by itself
        with suppress(RedisError, OSError):
            await self.client.connection_pool.disconnect(inuse_connections=False)


# Compare-and-act scripts: the GET and the DEL (or PEXPIRE) must be one step, or a
# lock that expired between them could be another process's by the time we act.
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


_EXTEND_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


def _px(ttl: float) -> int:
    """A TTL in seconds as Redis PX milliseconds; never 0, which Redis refuses."""
    return max(1, int(ttl * 1000))


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
    if config.redis_url and config.redis_url.startswith(("rediss://", "rediss+sentinel://")):
        options.update(
            ssl_ca_certs=config.redis_ca, ssl_certfile=config.redis_cert, ssl_keyfile=config.redis_key
        )
    return options


def redis_client(config: CacheConfig) -> aioredis.Redis | aioredis.RedisCluster:
    """Short timeouts: a cache that makes requests wait is worse than no cache."""
    assert config.redis_url is not None
    if config.redis_url.startswith(SENTINEL_SCHEMES):
        return sentinel_client(config)
    if config.redis_cluster:
        return aioredis.RedisCluster.from_url(config.redis_url, **redis_options(config))
    # A command that finds every pooled connection busy waits for one (up to redis_timeout, inside
    # a search's deadline) instead of failing at once: pool pressure is not Redis being down.
    pool = aioredis.BlockingConnectionPool.from_url(
        config.redis_url,
        timeout=config.redis_timeout,
        retry_on_error=[RedisConnectionError],
        health_check_interval=15,
        **redis_options(config),
    )
    return aioredis.Redis.from_pool(pool)


def sentinel_client(config: CacheConfig) -> aioredis.Redis:
    """A client of the primary the Sentinels name: it asks them again when a connection fails, so
    a failover costs the commands in flight (ResilientCache falls back meanwhile), then nothing."""
    assert config.redis_url is not None
    url = sentinel_url(config.redis_url)
    auth: dict[str, Any] = {"username": url.username, "password": url.password}
    options = redis_options(config)
    if url.tls:
        options["ssl"] = True
    sentinel_options = {**auth, **{k: v for k, v in options.items() if k != "max_connections"}}
    # redis-py's Sentinel is untyped; what it returns is a Redis client on a SentinelConnectionPool.
    sentinels = cast(Any, Sentinel)(list(url.sentinels), sentinel_kwargs=sentinel_options, **options)
    client: aioredis.Redis = sentinels.master_for(url.service_name, db=url.db, **auth)
    return client


def pool_exhausted(exc: BaseException) -> bool:
    """No free pooled connection came in time: the pool is busy, Redis is not down.

    `MaxConnectionsError` from a non-blocking pool (the cluster client's), or the
    blocking pool's wait running out, which redis-py raises as a ConnectionError
    whose cause is the timeout.
    """
    if isinstance(exc, MaxConnectionsError):
        return True
    return isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError)


# KEYS: the counters, those of the period before. ARGV: the name, the cap, the TTL in ms.
# One step, so that the cap holds however many processes count at once.
_TALLY = """
local n = redis.call('HGET', KEYS[1], ARGV[1])
if n or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[2]) then
  n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return (tonumber(n) or 0) + (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0)
"""
