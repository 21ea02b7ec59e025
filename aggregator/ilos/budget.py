"""Each org key's upstream request budget, shared by every process (contract: "Upstream budget").

ilos allows about `rate_limit` requests per `rate_window` per key, counted
over a moving window (its rolling minute). Every search and metadata request
is taken from that budget first; what finds none is not sent:

- a search may spend the whole window;
- a duration lookup only what leaves `search_reserve` of the window for
  searches, so searches come first;
- a refresh of a polled feed (its search and its lookups) the same, and also
  at most `refresh_share` of each window, counted on its own; the refresher
  runs an org's deferred lookups before its refreshes.

The count lives in Redis (`limiter.Limiter`), so N processes on M machines
together stay under it. With Redis absent or down each process counts alone,
allowed `rate_limit / (replicas_hint * workers)`.

What ilos says wins where it is stricter: `X-RateLimit-Remaining` below our
own figure uses up the difference, and a 429's `Retry-After` stops every
request to that key until it passes. Neither ever raises our figure.
"""

from __future__ import annotations

import enum
import hashlib
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond

from aggregator.config import Config, Org
from aggregator.model import Clock
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache
from aggregator.store.limiter import Limiter


class Spend(enum.Enum):
    SEARCH = "search"  # a user's search: may take the whole window
    DURATION = "duration"  # leaves search_reserve of the window for searches
    REFRESH = "refresh"  # as DURATION, and at most refresh_share of each window in all


@dataclass(frozen=True, slots=True)
class BudgetState:
    limit: int  # the figure in force for this process (its share while Redis is away)
    remaining: int
    cooling_until: float  # epoch seconds of a 429's Retry-After; 0 when none


class Budget:
    def __init__(self, config: Config, cache: Cache, limiter: Limiter, clock: Clock = time.time) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        self.limiter = limiter
        share = config.server.replicas_hint * config.server.workers
        window = config.upstream.rate_window
        self._items = {o.id: RateLimitItemPerSecond(o.rate_limit, window) for o in config.orgs}
        self._local = {
            o.id: RateLimitItemPerSecond(max(1, o.rate_limit // share), window) for o in config.orgs
        }
        self._ids = {o.id: "budget/" + _key_id(o) for o in config.orgs}
        share_of = config.upstream.refresh_share
        self._refresh_items = {
            o.id: RateLimitItemPerSecond(int(o.rate_limit * share_of), window) for o in config.orgs
        }
        self._refresh_local = {
            o.id: RateLimitItemPerSecond(int(o.rate_limit * share_of) // share, window) for o in config.orgs
        }
        self._refresh_ids = {o.id: "refresh/" + _key_id(o) for o in config.orgs}

    async def take(self, org: Org, spend: Spend) -> bool:
        """Take one request from the org's budget; False, and nothing taken, when there is none."""
        if await self._cooling_until(org) > self.clock():
            return False
        if spend is Spend.REFRESH and not await self._take_refresh(org, 1):
            return False
        item, local = self._items[org.id], self._local[org.id]
        return await self.limiter.hit(item, local, self._ids[org.id], keep=self._keep(item.amount, spend))

    async def take_many(self, org: Org, spend: Spend, wanted: int) -> int:
        """Take up to `wanted` requests at once; how many were taken (0 when none are left)."""
        if await self._cooling_until(org) > self.clock():
            return 0
        if spend is Spend.REFRESH:
            wanted = await self._take_refresh(org, wanted)
            if not wanted:
                return 0
        item, local = self._items[org.id], self._local[org.id]
        return await self.limiter.hit_up_to(
            item, local, self._ids[org.id], wanted, self._keep(item.amount, spend)
        )

    async def _take_refresh(self, org: Org, wanted: int) -> int:
        """Up to `wanted` from the refreshes' own share of the window (taken even if the budget
        then refuses: a refresh share counted a little high errs towards users)."""
        item, local = self._refresh_items[org.id], self._refresh_local[org.id]
        if item.amount < 1 or local.amount < 1:
            return 0
        return await self.limiter.hit_up_to(item, local, self._refresh_ids[org.id], wanted, 0)

    def _keep(self, limit: int, spend: Spend) -> int:
        """What a request of this kind must leave in the window: the searches' reserve, unless a search."""
        return 0 if spend is Spend.SEARCH else int(limit * self.config.upstream.search_reserve)

    async def believe(self, org: Org, remaining: int | None, retry_after: float | None) -> None:
        """What ilos said about this key: `X-RateLimit-Remaining`, and a 429's Retry-After."""
        if retry_after is not None:
            # A 429: its Retry-After says when to come back; its Remaining (0) says nothing more.
            wait = max(retry_after, 1.0)
            await self.cache.set(cache_keys.key("cooldown", org.id), repr(self.clock() + wait).encode(), wait)
            return
        if remaining is None:
            return
        item, local = self._items[org.id], self._local[org.id]
        _, ours, _ = await self.limiter.remaining(item, local, self._ids[org.id])
        if remaining < ours:
            await self.limiter.hit(item, local, self._ids[org.id], cost=ours - remaining)

    async def state(self, org: Org) -> BudgetState:
        limit, remaining, _ = await self.limiter.remaining(
            self._items[org.id], self._local[org.id], self._ids[org.id]
        )
        return BudgetState(limit, remaining, await self._cooling_until(org))

    async def _cooling_until(self, org: Org) -> float:
        raw = await self.cache.get(cache_keys.key("cooldown", org.id))
        if raw is None:
            return 0.0
        try:
            return float(raw)
        except ValueError:
            return 0.0


def _key_id(org: Org) -> str:
    """The budget is per key; a digest names it, so the key itself is never stored."""
    return hashlib.sha256(org.api_key.encode()).hexdigest()[:20]
