"""Asking every organisation at once and merging what comes back.

Each org is one task with its own timeouts; an org that is slow, failing or
rate-limited costs its own results and nothing else, and its `OrgReport` says
what happened (it becomes the `Server-Timing` metric `org-<id>`). Work is
overlapped: as soon as an org's body arrives its randtags are pre-scanned and
their duration lookups start, while feedparser reads the body in a worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from aggregator import cache as cache_keys
from aggregator.cache import Cache
from aggregator.config import Config, Org
from aggregator.durations import DurationLookups
from aggregator.merge import merge
from aggregator.parsing import parse_search_answer, prescan_randtags
from aggregator.upstream import Outcome, fetch_search
from aggregator.videos import Result, Video

log = logging.getLogger(__name__)

# Server-Timing `desc` values, as the contract names them.
OK, CACHED, STALE, TIMEOUT, ERROR, SKIPPED, DENIED = (
    "ok", "cached", "stale", "timeout", "error", "skipped", "denied")
_STATUS_OF = {Outcome.OK: OK, Outcome.TIMEOUT: TIMEOUT, Outcome.DENIED: DENIED}


@dataclass(frozen=True, slots=True)
class OrgReport:
    org_id: str
    status: str  # one of the Server-Timing descs above
    elapsed_ms: float
    detail: str = ""  # safe to log and show: never a key or upstream text


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    results: tuple[Result, ...]
    reports: tuple[OrgReport, ...]


def new_parse_executor(workers: int) -> concurrent.futures.Executor:
    """Processes run feedparser on other cores; 0 workers means one thread (tests, tiny hosts)."""
    if workers <= 0:
        return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parse")
    # spawn, not fork: forking a process that runs an event loop and sockets is unsafe.
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


def warm_up(executor: concurrent.futures.Executor, workers: int) -> list[concurrent.futures.Future]:
    """Import feedparser in every worker now, not on the first user's search."""
    return [executor.submit(parse_search_answer, b"<rss version='2.0'><channel/></rss>")
            for _ in range(max(1, workers))]


class Searcher:
    def __init__(self, config: Config, session: aiohttp.ClientSession, cache: Cache,
                 parse_executor: concurrent.futures.Executor) -> None:
        self.config = config
        self.session = session
        self.cache = cache
        self.parse_executor = parse_executor
        self.durations = DurationLookups(config, session, cache)
        self._cooldown_until: dict[str, float] = {}  # org id -> monotonic time, after a 429

    async def search(self, query: str, org_ids: Sequence[str], sort: str) -> SearchAnswer:
        orgs = [o for o in self.config.orgs if o.id in org_ids]
        answers = await asyncio.gather(*(self._org_answer(org, query) for org in orgs))
        merged = merge([(org.id, videos) for org, (videos, _) in zip(orgs, answers)], sort)
        return SearchAnswer(tuple(merged), tuple(report for _, report in answers))

    async def _org_answer(self, org: Org, query: str) -> tuple[list[Video], OrgReport]:
        started = time.perf_counter()

        def report(status: str, detail: str = "") -> OrgReport:
            return OrgReport(org.id, status, (time.perf_counter() - started) * 1000, detail)

        if self._cooldown_until.get(org.id, 0.0) > time.monotonic():
            return [], report(SKIPPED, "rate limited: waiting for Retry-After")
        fetched = await fetch_search(self.session, org, query, self.config.upstream)
        if not fetched.ok:
            if fetched.outcome is Outcome.RATE_LIMITED:
                self._cooldown_until[org.id] = time.monotonic() + (fetched.retry_after or 60.0)
            log.warning("search failed: org=%s outcome=%s %s", org.id, fetched.outcome.value, fetched.detail)
            return [], report(_STATUS_OF.get(fetched.outcome, ERROR), fetched.detail)
        early = self.durations.start(org, prescan_randtags(fetched.body))
        loop = asyncio.get_running_loop()
        try:
            videos = await loop.run_in_executor(self.parse_executor, parse_search_answer, fetched.body)
        except Exception as exc:  # UnparseableAnswer, or anything feedparser trips on
            early.cancel()
            log.warning("search failed: org=%s outcome=unparseable (%s)", org.id, type(exc).__name__)
            return [], report(ERROR, "answer is not RSS or Atom")
        thumbs = [(cache_keys.key("thumb", v.randtag), v.thumbnail_url.encode())
                  for v in videos if v.thumbnail_url]
        await self.cache.set_many(thumbs, self.config.cache.stale_ttl)
        need = [v.randtag for v in videos if v.duration_ms is None]
        durations = await self.durations.resolve(org, need)
        await early
        return [v.with_duration(durations.get(v.randtag)) for v in videos], report(OK)
