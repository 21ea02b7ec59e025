"""Each org key's upstream request budget, shared by every process (contract: "Upstream budget").

ilos allows about `rate_limit` requests per `rate_window` per key, counted
over a moving window (its rolling minute). Every search and metadata request
is taken from that budget first; what finds none is not sent:

- a search may spend the whole window;
- a duration lookup (and, later, a refresh) only what leaves
  `search_reserve` of the window for searches, so searches come first.

The count lives in Redis (the `limits` library's moving window, an exact log
of timestamps kept by one Lua script), so N processes on M machines together
stay under it. With Redis absent or down each process counts alone, allowed
`rate_limit / (replicas_hint * workers)` of it.

What ilos says wins where it is stricter: `X-RateLimit-Remaining` below our
own figure uses up the difference, and a 429's `Retry-After` stops every
request to that key until it passes. Neither ever raises our figure.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from aggregator import cache as cache_keys
from aggregator.cache import Cache
from aggregator.config import Config, Org
from aggregator.model import Clock

log = logging.getLogger(__name__)
_STORAGE_ERRORS = (StorageError, RedisError, OSError, TimeoutError)


class Spend(enum.Enum):
    SEARCH = "search"  # a user's search: may take the whole window
    DURATION = "duration"  # leaves search_reserve of the window for searches


@dataclass(frozen=True, slots=True)
class BudgetState:
    limit: int  # the figure in force for this process (a share of it while Redis is away)
    remaining: int
    cooling_until: float  # epoch seconds of a 429's Retry-After; 0 when none


class Budget:
    def __init__(
        self, config: Config, cache: Cache, shared: RedisStorage | None, clock: Clock = time.time
    ) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        self._shared = MovingWindowRateLimiter(shared) if shared is not None else None
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared_down_until = 0.0
        share = config.server.replicas_hint * config.server.workers
        window = config.upstream.rate_window
        self._items = {o.id: RateLimitItemPerSecond(o.rate_limit, window) for o in config.orgs}
        self._local_items = {
            o.id: RateLimitItemPerSecond(max(1, o.rate_limit // share), window) for o in config.orgs
        }
        self._ids = {o.id: _key_id(o) for o in config.orgs}

    async def take(self, org: Org, spend: Spend) -> bool:
        """Take one request from the org's budget; False, and nothing taken, when there is none."""
        if await self._cooling_until(org) > self.clock():
            return False
        try:
            return await self._take(*self._limiter(org), org, spend)
        except _STORAGE_ERRORS as exc:
            self._shared_failed(exc)
            return await self._take(self._local, self._local_items[org.id], org, spend)

    async def _take(
        self, limiter: MovingWindowRateLimiter, item: RateLimitItemPerSecond, org: Org, spend: Spend
    ) -> bool:
        reserve = int(item.amount * self.config.upstream.search_reserve) if spend is Spend.DURATION else 0
        if reserve and not await limiter.test(item, self._ids[org.id], cost=1 + reserve):
            return False
        return await limiter.hit(item, self._ids[org.id])

    async def believe(self, org: Org, remaining: int | None, retry_after: float | None) -> None:
        """What ilos said about this key: `X-RateLimit-Remaining`, and a 429's Retry-After."""
        if retry_after is not None:
            until = self.clock() + max(retry_after, 1.0)
            await self.cache.set(
                cache_keys.key("cooldown", org.id), repr(until).encode(), max(retry_after, 1.0)
            )
        if remaining is None:
            return
        limiter, item = self._limiter(org)
        try:
            ours = (await limiter.get_window_stats(item, self._ids[org.id])).remaining
            if remaining < ours:
                await limiter.hit(item, self._ids[org.id], cost=ours - remaining)
        except _STORAGE_ERRORS as exc:
            self._shared_failed(exc)

    async def state(self, org: Org) -> BudgetState:
        limiter, item = self._limiter(org)
        try:
            remaining = (await limiter.get_window_stats(item, self._ids[org.id])).remaining
        except _STORAGE_ERRORS as exc:
            self._shared_failed(exc)
            limiter, item = self._local, self._local_items[org.id]
            remaining = (await limiter.get_window_stats(item, self._ids[org.id])).remaining
        return BudgetState(item.amount, max(0, remaining), await self._cooling_until(org))

    async def _cooling_until(self, org: Org) -> float:
        raw = await self.cache.get(cache_keys.key("cooldown", org.id))
        if raw is None:
            return 0.0
        try:
            return float(raw)
        except ValueError:
            return 0.0

    def _limiter(self, org: Org) -> tuple[MovingWindowRateLimiter, RateLimitItemPerSecond]:
        if self._shared is not None and self.clock() >= self._shared_down_until:
            return self._shared, self._items[org.id]
        return self._local, self._local_items[org.id]

    def _shared_failed(self, exc: BaseException) -> None:
        if self.clock() < self._shared_down_until:
            return  # already counting alone (requests that were under way when Redis went)
        log.warning("budget: Redis unreachable (%s): counting this process's share", type(exc).__name__)
        self._shared_down_until = self.clock() + self.config.cache.redis_retry_seconds


def _key_id(org: Org) -> str:
    """The budget is per key; a digest names it, so the key itself is never stored."""
    return hashlib.sha256(org.api_key.encode()).hexdigest()[:20]


@asynccontextmanager
async def shared_storage(config: Config) -> AsyncIterator[RedisStorage | None]:
    """The `limits` storage on the configured Redis, under our namespace; None without Redis."""
    url = config.cache.redis_url
    if not url:
        yield None
        return
    storage = RedisStorage(
        "async+" + url,
        implementation="redispy",
        key_prefix=cache_keys.NAMESPACE,
        wrap_exceptions=True,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
    )
    try:
        yield storage
    finally:
        with suppress(Exception):
            # limits keeps its redis-py client on the bridge, untyped; it has no close of its own.
            await cast(Any, storage.bridge).storage.aclose()
