"""Each org key's upstream request budget, shared by every process (contract: "Upstream budget").

ilos allows about `rate_limit` requests per `rate_window` per key, counted
over a moving window (its rolling minute). Every search and metadata request
is taken from that budget first; what finds none is not sent:

- a search for a query asked before (lately, by anyone: `search.popularity`)
  may spend the whole window;
- a search for a query asked for the first time only what leaves
  `one_off_reserve` of the window, so that a burst of one-off queries cannot
  take the requests that queries many people ask need (it is then `skipped`,
  or answered stale where an older answer is kept);
- a duration lookup of a video a page shows only what leaves `search_reserve`
  of the window for searches, so searches come first;
- a refresh of a polled feed (its search and its lookups) what leaves twice
  that, and at most `refresh_share` of each window, counted on its own;
- a lookup no page waits for (`Spend.DEFERRED`: the videos past the first page,
  lookups that failed for a passing reason) what leaves three times that.

The count lives in Redis (`store.held.HeldWindows`), so N processes on M
machines together stay under it. A unit is held from when it is taken until a
full window after its request ended (`done`), so however late a request leaves
or arrives, ilos's rolling count never holds more than `rate_limit`. With Redis
absent each process counts alone, allowed `rate_limit / (replicas_hint *
workers)`; with Redis down, the window last seen still counts as well.

What ilos says wins where it is stricter: `X-RateLimit-Remaining` below our
own figure uses up the difference, and a 429's `Retry-After` stops every
request to that key until it passes. Neither ever raises our figure.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aggregator.config import Config, Org
from aggregator.model import Clock
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache
from aggregator.store.held import HeldWindows

# Seconds a unit is held past the window at most when its request's end is never reported (its
# process died): beyond the upstream timeout, the longest a request may wait to leave (pacing,
# a pooled connection).
HOLD_SLACK = 5.0


class Spend(enum.Enum):
    """Who a request is for, in the order they come first (contract: "Budget priority")."""

    SEARCH = "search"  # a user's search for a query asked before: may take the whole window
    ONE_OFF = "one-off"  # a search for a query asked for the first time: leaves one_off_reserve
    DURATION = "duration"  # for an answer being served: leaves search_reserve for searches
    REFRESH = "refresh"  # keeping a polled feed fresh: leaves twice that, and at most refresh_share
    DEFERRED = "deferred"  # a lookup no page is waiting for: leaves three times search_reserve


@dataclass(frozen=True, slots=True)
class BudgetState:
    limit: int  # the figure in force for this process (its share while Redis is away)
    remaining: int
    cooling_until: float  # epoch seconds of a 429's Retry-After; 0 when none
    held: Mapping[str, int] = field(
        default_factory=dict
    )  # Spend value (or "upstream") -> units in the window


@dataclass(frozen=True, slots=True)
class Grant:
    """Requests taken from an org key's budget, held until `Budget.done` says they ended."""

    org_id: str
    units: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.units)

    def each(self) -> list[Grant]:
        """One grant per request, to be done one by one."""
        return [Grant(self.org_id, (unit,)) for unit in self.units]


class Budget:
    def __init__(self, config: Config, cache: Cache, windows: HeldWindows, clock: Clock = time.time) -> None:
        self.config = config
        self.cache = cache
        self.clock = clock
        self.windows = windows
        self._processes = config.server.replicas_hint * config.server.workers
        self._window = float(config.upstream.rate_window)
        self._hold = config.upstream.timeout + HOLD_SLACK
        self._ids = {o.id: "budget:" + _key_id(o) for o in config.orgs}
        self._refresh_ids = {o.id: "refresh:" + _key_id(o) for o in config.orgs}

    async def take(self, org: Org, spend: Spend) -> Grant | None:
        """One request from the org's budget; None, and nothing taken, when there is none."""
        grant = await self.take_many(org, spend, 1)
        return grant if grant.units else None

    async def take_many(self, org: Org, spend: Spend, wanted: int) -> Grant:
        """Up to `wanted` requests at once (none when none are left)."""
        none = Grant(org.id, ())
        if wanted <= 0 or await self._cooling_until(org) > self.clock():
            return none
        if spend is Spend.REFRESH:
            wanted = await self._take_refresh(org, wanted)
            if not wanted:
                return none
        limit = org.rate_limit
        units = await self.windows.take(
            self._ids[org.id],
            limit,
            self._share(limit),
            wanted,
            self._window,
            self._hold,
            self._keep(limit, spend),
            spend.value,
        )
        return Grant(org.id, tuple(units))

    async def done(self, grant: Grant) -> None:
        """The grant's requests have their answers (or gave up): each is held one more window, then freed."""
        if grant.units:
            await self.windows.release(self._ids[grant.org_id], grant.units, self._window)

    async def _take_refresh(self, org: Org, wanted: int) -> int:
        """Up to `wanted` from the refreshes' own share of the window (taken even if the budget
        then refuses: a refresh share counted a little high errs towards users)."""
        limit = int(org.rate_limit * self.config.upstream.refresh_share)
        if limit < 1 or self._share(limit) < 1:
            return 0
        units = await self.windows.take(
            self._refresh_ids[org.id], limit, self._share(limit), wanted, self._window, 0.0
        )
        return len(units)

    def _share(self, limit: int) -> int:
        """What one process may use while it counts alone."""
        return limit // self._processes

    def _keep(self, limit: int, spend: Spend) -> int:
        """What a request of this kind must leave in the window for those that come before it."""
        reserve = self.config.upstream.search_reserve
        if spend is Spend.SEARCH:
            return 0
        if spend is Spend.ONE_OFF:
            return int(limit * self.config.upstream.one_off_reserve)
        if spend is Spend.DURATION:
            return int(limit * reserve)
        times = 2 if spend is Spend.REFRESH else 3
        return min(limit - 1, int(limit * min(1.0, times * reserve)))

    async def believe(self, org: Org, remaining: int | None, retry_after: float | None) -> None:
        """What ilos said about this key: `X-RateLimit-Remaining`, and a 429's Retry-After."""
        if retry_after is not None:
            # A 429: its Retry-After says when to come back, and no later; its Remaining (0)
            # says nothing more.
            wait = max(retry_after, 1.0)
            await self.cache.set(cache_keys.key("cooldown", org.id), repr(self.clock() + wait).encode(), wait)
            return
        if remaining is None:
            return
        figures = await self.windows.figures(self._ids[org.id], org.rate_limit, self._share(org.rate_limit))
        if remaining < figures.remaining:
            await self.windows.charge(self._ids[org.id], figures.remaining - remaining, self._window)

    async def state(self, org: Org) -> BudgetState:
        figures = await self.windows.figures(self._ids[org.id], org.rate_limit, self._share(org.rate_limit))
        return BudgetState(figures.limit, figures.remaining, await self._cooling_until(org), figures.held)

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
