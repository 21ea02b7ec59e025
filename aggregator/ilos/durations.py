"""Annotating videos with their durations from the metadata endpoint, within the budget.

A duration never changes, so it is cached per randtag for `duration_ttl`
whatever query or org found the video (a randtag is global in ilos). A video
whose duration an org's key cannot have is remembered as such for
`failed_duration_ttl`, for that org only: another org's key (an upload webhook
naming a randtag of another org) must not erase what the video's own org knows.

Searches come before durations (`budget.Spend.DURATION`), and the videos a
page shows before the rest of their answers (`Searcher.search`): a lookup the
budget allows starts at once, at a steady pace so that their answers do not all land
in one turn of the loop, and an answer waits for them at
most `duration_wait`; the rest finish behind it. A lookup the budget refuses,
or one that fails for a passing reason (timeout, 429, network), is deferred:
queued in the cache per org (at most `MAX_DEFERRED`), deduplicated by
randtag, and run by `drain_deferred` as the budget refills, after the lookups
of answers being served (`Spend.DEFERRED`), in one process at a time (a lease).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Sequence

import aiohttp

from aggregator.config import Config, Org
from aggregator.ilos.budget import Budget, Grant, Spend
from aggregator.ilos.client import Outcome, fetch_duration
from aggregator.loop.flights import Flights
from aggregator.loop.turns import Pacer, Turn
from aggregator.metrics import Metrics
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache, hold_lease

log = logging.getLogger(__name__)
NOTHING = Grant("", ())  # for joining a lookup already under way: nothing to give back
UNKNOWN = b"-"  # cached for a video whose duration cannot be had
LATER = -1  # a lookup that failed for a passing reason: deferred, not known
# Lookups start at most this many per 10 ms in the whole process (eventloop.Pacer): about
# 2,000 a second, far above any key's budget, and each turn of the loop then handles
# one batch of answers (~6 ms), not hundreds at once.
START_PACE = 32
LEASE_TTL = 5.0  # seconds a drainer holds the lease without renewing it
DEFERRED_TTL = 86_400.0  # a queue nobody drains for a day is dropped
# Lookups waiting per org, at most: a day of one key's budget at the defaults is 86,400, but a
# queue that long helps nobody; a video beyond it is looked up when its answer is fetched again.
MAX_DEFERRED = 1_000


class DurationLookups:
    def __init__(
        self, config: Config, session: aiohttp.ClientSession, cache: Cache, metrics: Metrics, budget: Budget
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.session = session
        self.cache = cache
        self.budget = budget
        self._flights: Flights[str, int | None] = Flights("duration lookup")
        self._lease = secrets.token_hex(8).encode()
        self._pace = Pacer(START_PACE, 0.01, least=8)

    async def resolve(
        self,
        org: Org,
        randtags: Sequence[str],
        wait: float,
        spend: Spend = Spend.DURATION,
        defer: bool = True,
    ) -> dict[str, int | None]:
        """The durations known within `wait` seconds: randtag -> ms, or None when it cannot be had.

        A randtag missing from the answer is pending: being looked up, or deferred (unless
        `defer` is False: then a lookup the budget refuses is simply not made now).
        """
        if not randtags:
            return {}
        found = await self.known(org, randtags)
        started: dict[str, asyncio.Task[int | None]] = {}
        wanted: list[str] = []
        for tag in randtags:
            if tag in found:
                continue
            if tag in self._flights:  # asked already: join it
                started[tag] = self._flights.start(tag, functools.partial(self._lookup, org, tag, NOTHING))
            else:
                wanted.append(tag)
        self.metrics.cache_lookups.labels("duration", "hit").inc(len(found))
        self.metrics.cache_lookups.labels("duration", "miss").inc(len(randtags) - len(found))
        # One request to the budget for all of them, not one each: granted ones start now.
        grant = await self.budget.take_many(org, spend, len(wanted))
        for tag, unit in zip(wanted, grant.each(), strict=False):
            started[tag] = await self._start(org, tag, unit)
        deferred = wanted[len(grant) :]
        if deferred and defer:
            await self.defer(org, deferred)
        if started and wait > 0:
            await asyncio.wait(started.values(), timeout=wait)
        for tag, task in started.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                result = task.result()
                if result != LATER:
                    found[tag] = result
        return found

    async def known(self, org: Org, randtags: Sequence[str]) -> dict[str, int | None]:
        """What the cache knows now about these videos: their durations (whoever looked them up),
        or that this org's key could not have one."""
        cached = await self.cache.get_many([cache_keys.key("duration", t) for t in randtags])
        found = {tag: _read(value) for tag, value in zip(randtags, cached, strict=True) if value is not None}
        rest = [tag for tag in randtags if tag not in found]
        if rest:
            failed = await self.cache.get_many([_failed_key(org, t) for t in rest])
            found.update((tag, None) for tag, value in zip(rest, failed, strict=True) if value is not None)
        return found

    async def stop(self) -> None:
        """Cancel the lookups under way (shutdown)."""
        await self._flights.stop()

    async def defer(self, org: Org, randtags: Sequence[str]) -> None:
        queue = cache_keys.key("deferred", org.id)
        room = MAX_DEFERRED - await self.cache.queue_size(queue)
        if room <= 0:
            return
        await self.cache.enqueue(queue, randtags[:room], DEFERRED_TTL)
        self.metrics.deferred.labels(org.id).inc(min(room, len(randtags)))

    async def drain_deferred(self) -> int:
        """One pass over the deferred lookups, if this process holds the lease; how many it started."""
        if not await hold_lease(self.cache, "deferred", self._lease, LEASE_TTL):
            return 0
        started = 0
        turn = Turn()
        for org in self.config.orgs:
            queue = cache_keys.key("deferred", org.id)
            grant: Grant | None = None
            while await self.cache.queue_size(queue):
                if turn.due():
                    await turn.end()
                grant = grant or await self.budget.take(org, Spend.DEFERRED)
                if grant is None:
                    break
                taken = await self.cache.dequeue(queue, 1)
                if not taken:
                    break
                if taken[0] in self._flights or await self.known(org, taken):
                    continue  # looked up since it was queued (a page showed it): never asked twice
                await self._start(org, taken[0], grant)
                grant = None
                started += 1
            if grant is not None:
                await self.budget.done(grant)
        return started

    async def pending(self, org: Org) -> int:
        return await self.cache.queue_size(cache_keys.key("deferred", org.id))

    async def _start(self, org: Org, randtag: str, grant: Grant) -> asyncio.Task[int | None]:
        """The lookup of `randtag` on `grant`; if one is under way already, that one, and the grant goes back."""
        if randtag in self._flights:
            await self.budget.done(grant)
            grant = NOTHING
        return self._flights.start(randtag, functools.partial(self._lookup, org, randtag, grant))

    async def _lookup(self, org: Org, randtag: str, grant: Grant) -> int | None:
        """One metadata request on `grant`, taken from the budget before; its result is cached."""
        try:
            await self._pace.admit()
            answer = await fetch_duration(self.session, org, randtag, self.config.upstream)
        finally:
            await self.budget.done(grant)  # held one more window from its answer, as ilos counts it
        self.metrics.upstream.labels(org.id, "metadata", answer.outcome.value).inc()
        self.metrics.upstream_seconds.labels(org.id, "metadata").observe(answer.elapsed_ms / 1000)
        await self.budget.believe(org, answer.rate_remaining, answer.retry_after)
        cache_key = cache_keys.key("duration", randtag)
        if answer.duration_ms is not None:
            await self.cache.set(cache_key, str(answer.duration_ms).encode(), self.config.cache.duration_ttl)
            return answer.duration_ms
        log.warning(
            "duration lookup failed: org=%s randtag=%s outcome=%s %s",
            org.id,
            randtag,
            answer.outcome.value,
            answer.detail,
        )
        if answer.outcome in (Outcome.UNPARSEABLE, Outcome.HTTP_ERROR, Outcome.TOO_LARGE):
            # The video is the problem for this org's key (level: error, 404): do not ask again
            # soon with this key; another org's key may still have it (and what it has stays).
            await self.cache.set(_failed_key(org, randtag), UNKNOWN, self.config.cache.failed_duration_ttl)
            return None
        await self.defer(org, [randtag])  # timeout, 429, network, refused key: try again later
        return LATER


def _failed_key(org: Org, randtag: str) -> str:
    return cache_keys.key("no-duration", org.id, randtag)


def _read(value: bytes) -> int | None:
    if value == UNKNOWN:
        return None
    try:
        return int(value)
    except ValueError:
        return None
