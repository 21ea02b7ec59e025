"""The composition root: every service of one process, built here and only here, and handed down.

`open_services` builds them in dependency order (the client session and parse
workers; the cache and the limiter's storage; each key's budget and breaker;
duration lookups; org answers; the searcher; rendered pages; subscriptions and
the refresher) and closes what needs closing. Each service gets what it uses
and nothing reaches through one service for another. `run_background` starts
the chores no request waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.freshness.refresher import Refresher
from aggregator.freshness.subscriptions import Subscriptions
from aggregator.freshness.websub import Announcer
from aggregator.ilos.breaker import Breakers
from aggregator.ilos.budget import Budget
from aggregator.ilos.client import new_session
from aggregator.ilos.durations import DurationLookups
from aggregator.ilos.parsepool import ParsePool
from aggregator.ilos.searches import OrgSearches
from aggregator.loop import heap, lag
from aggregator.metrics import Metrics
from aggregator.model import Clock
from aggregator.pages.service import Pages
from aggregator.render.formats import FORMATS
from aggregator.search.answers import AnswerSource
from aggregator.search.popularity import Popularity
from aggregator.search.rank import Ranker
from aggregator.search.searcher import Searcher
from aggregator.search.suggestions import SuggestionIndex
from aggregator.search.termstats import TermStats
from aggregator.search.thumbnails import Thumbnails
from aggregator.store import cache as caches
from aggregator.store.cache import Cache
from aggregator.store.held import HeldWindows, held_windows
from aggregator.store.limiter import Limiter, shared_storage
from aggregator.web.auth import Authenticator
from aggregator.web.callerlimits import CallerLimits

log = logging.getLogger(__name__)
STOP_WAIT = 5.0  # seconds background tasks get to end at shutdown


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    clock: Clock
    metrics: Metrics
    auth: Authenticator
    cache: Cache
    parse_pool: ParsePool
    caller_limits: CallerLimits
    searcher: Searcher
    pages: Pages
    subscriptions: Subscriptions
    refresher: Refresher


@asynccontextmanager
async def open_services(config: Config, clock: Clock, metrics: Metrics) -> AsyncIterator[Services]:
    session = new_session()
    parse_pool = ParsePool(config.server.parse_workers, config.description.language)
    try:
        await parse_pool.start()
        async with (
            caches.from_config(config.cache, clock) as cache,
            shared_storage(config.cache) as shared,
            held_windows(config.cache, clock) as windows,
        ):
            limiter = Limiter(shared, config.cache.redis_retry_seconds, clock)
            yield _build(config, clock, metrics, session, parse_pool, cache, limiter, windows)
    finally:
        await session.close()
        await parse_pool.close()


def _build(
    config: Config,
    clock: Clock,
    metrics: Metrics,
    session: aiohttp.ClientSession,
    parse_pool: ParsePool,
    cache: Cache,
    limiter: Limiter,
    windows: HeldWindows,
) -> Services:
    budget = Budget(config, cache, windows, clock)
    breakers = Breakers(cache, clock)
    durations = DurationLookups(config, session, cache, metrics, budget)
    searches = OrgSearches(config, session, parse_pool, breakers, budget, metrics)
    answers = AnswerSource(config, cache, searches, durations, metrics, clock)
    suggestions = SuggestionIndex(
        min_callers=config.suggest.min_query_count, retention_days=config.suggest.retention, clock=clock
    )
    thumbnails = Thumbnails(cache, answers.refresh, clock)
    ranker = Ranker(config, TermStats(cache, clock))
    popularity = Popularity(cache, config.suggest.retention, clock)
    searcher = Searcher(
        config, answers, breakers, budget, durations, thumbnails, suggestions, ranker, popularity, metrics
    )
    pages = Pages(config, cache, searcher, clock)
    subscriptions = Subscriptions(config, cache, clock, {f.name: f.path for f in FORMATS if f.subscribable})
    anyone = Caller(None, tuple(o.id for o in config.orgs))
    announcer = Announcer(
        config.server.websub_hub, session, cache, pages, anyone, metrics, config.cache.subscription_idle
    )
    refresher = Refresher(config, cache, subscriptions, searcher, pages, announcer, clock)
    return Services(
        config=config,
        clock=clock,
        metrics=metrics,
        auth=Authenticator(config),
        cache=cache,
        parse_pool=parse_pool,
        caller_limits=CallerLimits(config, limiter),
        searcher=searcher,
        pages=pages,
        subscriptions=subscriptions,
        refresher=refresher,
    )


@asynccontextmanager
async def run_background(services: Services, refresh_every: float | None) -> AsyncIterator[None]:
    """The chores no request waits for, from start-up to shutdown.

    Deferred duration lookups, the loop's lag watch and its full collections, and
    (unless `refresh_every` is None, as in tests that drive it) the refresh-ahead pass.
    """
    heap.settle_heap()
    stop_timing = lag.time_iterations(services.metrics.loop_iteration_cpu.observe)
    tasks = [
        asyncio.create_task(services.searcher.run_background()),
        asyncio.create_task(lag.watch(services.metrics.loop_tick)),
        asyncio.create_task(heap.collect_in_own_turns()),
    ]
    if refresh_every is not None:
        tasks.append(asyncio.create_task(services.refresher.run(refresh_every)))
    try:
        yield
    finally:
        stop_timing()
        await _stop(tasks)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait for them, but not for ever: shutdown must end."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT)
    for task in stuck:
        log.error("shutdown: a background task did not stop (%s)", task.get_coro())
