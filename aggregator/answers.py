"""One organisation's answer to one query: from the cache, from a shared fetch, or stale.

An org's parsed answer (videos with durations) is cached under the normalised
query for `search_ttl`, and kept for `stale_ttl` as the last good answer to
fall back on when the org fails. Concurrent misses for the same org and query
make one upstream request: in one process they share a task, across processes
a short Redis lock (`SET NX PX`) elects one fetcher while the others wait for
its answer to land, with a bounded wait and a fallback to fetching themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass

import aiohttp

from aggregator import cache as cache_keys
from aggregator import thumbnails
from aggregator.cache import Cache
from aggregator.config import Config, Org
from aggregator.durations import DurationLookups
from aggregator.metrics import Metrics
from aggregator.model import Clock, OrgStatus, Video
from aggregator.parsepool import ParsePool
from aggregator.upstream import Outcome, fetch_search

log = logging.getLogger(__name__)

_STATUS_OF = {Outcome.OK: OrgStatus.OK, Outcome.TIMEOUT: OrgStatus.TIMEOUT, Outcome.DENIED: OrgStatus.DENIED}
FAILURE_MEMORY = 5.0  # seconds other processes are told that a fetch just failed
WAIT_POLL = 0.02


@dataclass(frozen=True, slots=True)
class OrgAnswer:
    videos: tuple[Video, ...]
    status: OrgStatus
    fresh_until: float = 0.0  # epoch seconds; 0 when nothing fresh was had
    detail: str = ""  # safe to log and show: never a key or upstream text


@dataclass(frozen=True, slots=True)
class _Stored:
    fetched_at: float
    videos: tuple[Video, ...]


class AnswerSource:
    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        cache: Cache,
        parse_pool: ParsePool,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.session = session
        self.cache = cache
        self.parse_pool = parse_pool
        self.metrics = metrics
        self.durations = DurationLookups(config, session, cache, metrics)
        self._inflight: dict[tuple[str, str], asyncio.Task[OrgAnswer]] = {}

    async def answer(self, org: Org, query: str) -> OrgAnswer:
        """`query` is already normalised (lower-cased, whitespace folded)."""
        digest = cache_keys.query_digest(query)
        stored = await self._read(org, digest)
        ttl = self.config.cache.search_ttl
        now = self.clock()
        if stored is not None and now < stored.fetched_at + ttl:
            return OrgAnswer(stored.videos, OrgStatus.CACHED, stored.fetched_at + ttl)
        if stored is not None and now < stored.fetched_at + ttl + self.config.cache.stale_while_revalidate:
            # Stale-while-revalidate: answer now, refresh behind the answer (one fetch, shared).
            self._flight(org, query, digest)
            return OrgAnswer(stored.videos, OrgStatus.STALE, 0.0, "refreshing")
        if await self.cache.get(cache_keys.key("cooldown", org.id)) is not None:
            fresh = OrgAnswer((), OrgStatus.SKIPPED, detail="rate limited: waiting for Retry-After")
        else:
            fresh = await self._shared_fetch(org, query, digest)
        if fresh.status.good or stored is None:
            return fresh
        return OrgAnswer(stored.videos, OrgStatus.STALE, 0.0, fresh.detail or fresh.status)

    async def refresh(self, org_id: str, query: str) -> None:
        """Ask the org again now (sharing a fetch already under way); for thumbnails' new signatures."""
        org = self.config.org(org_id)
        if org is not None:
            await self._shared_fetch(org, query, cache_keys.query_digest(query))

    async def _read(self, org: Org, digest: str) -> _Stored | None:
        raw = await self.cache.get(cache_keys.key("answer", org.id, digest))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return _Stored(float(doc["fetched_at"]), tuple(Video.from_json(v) for v in doc["videos"]))
        except (ValueError, KeyError, TypeError):
            log.warning("dropping an unreadable cached answer for org=%s", org.id)
            return None

    async def _shared_fetch(self, org: Org, query: str, digest: str) -> OrgAnswer:
        """One fetch per org and query in this process, whoever else asks meanwhile."""
        return await asyncio.shield(self._flight(org, query, digest))

    def _flight(self, org: Org, query: str, digest: str) -> asyncio.Task[OrgAnswer]:
        """The fetch under way for this org and query, started if there is none.

        It runs as its own task: a caller that gives up does not cancel it for
        the others, and a background refresh needs nobody to wait for it.
        """
        flight = (org.id, digest)
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._locked_fetch(org, query, digest))
            self._inflight[flight] = task
            task.add_done_callback(lambda t: self._landed(flight, t))
        return task

    def _landed(self, flight: tuple[str, str], task: asyncio.Task[OrgAnswer]) -> None:
        self._inflight.pop(flight, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("fetch for org=%s failed unexpectedly (%s)", flight[0], type(task.exception()).__name__)

    async def _locked_fetch(self, org: Org, query: str, digest: str) -> OrgAnswer:
        """One fetch per org and query across the processes that share the cache."""
        lock = cache_keys.key("lock", org.id, digest)
        token = secrets.token_hex(8).encode()
        hold = self.config.upstream.timeout * 2 + 2
        if await self.cache.add(lock, token, hold):
            try:
                return await self._fetch(org, query, digest)
            finally:
                if await self.cache.get(lock) == token:
                    await self.cache.delete(lock)
        waited = await self._wait_for_other(org, digest, lock, self.clock(), hold)
        return waited if waited is not None else await self._fetch(org, query, digest)

    async def _wait_for_other(
        self, org: Org, digest: str, lock: str, since: float, hold: float
    ) -> OrgAnswer | None:
        deadline = time.monotonic() + hold
        failed = cache_keys.key("failed", org.id, digest)
        while time.monotonic() < deadline:
            await asyncio.sleep(WAIT_POLL)
            released = await self.cache.get(lock) is None
            # Read the answer after looking at the lock: the holder stores the
            # answer, then releases the lock, so a released lock with no answer
            # (and no failure) means the holder is gone.
            stored = await self._read(org, digest)
            if stored is not None and stored.fetched_at >= since - 1.0:
                return OrgAnswer(
                    stored.videos, OrgStatus.CACHED, stored.fetched_at + self.config.cache.search_ttl
                )
            status = await self.cache.get(failed)
            if status is not None:
                return OrgAnswer((), OrgStatus.parse(status), detail="failed in another process")
            if released:
                return None  # the holder gave up without a word: ask ourselves
        return None

    async def _fetch(self, org: Org, query: str, digest: str) -> OrgAnswer:
        fetched = await fetch_search(self.session, org, query, self.config.upstream)
        self.metrics.upstream.labels(org.id, "search", fetched.outcome.value).inc()
        if not fetched.ok:
            if fetched.outcome is Outcome.RATE_LIMITED:
                await self.cache.set(cache_keys.key("cooldown", org.id), b"1", fetched.retry_after or 60.0)
            log.warning("search failed: org=%s outcome=%s %s", org.id, fetched.outcome.value, fetched.detail)
            status = _STATUS_OF.get(fetched.outcome, OrgStatus.ERROR)
            return await self._failed(org, digest, status, fetched.detail)
        try:
            parsed = await self.parse_pool.parse(fetched.body)
        except Exception as exc:  # UnparseableAnswer, or anything feedparser trips on
            log.warning("search failed: org=%s outcome=unparseable (%s)", org.id, type(exc).__name__)
            return await self._failed(org, digest, OrgStatus.ERROR, "answer is not RSS or Atom")
        await self.cache.set_many(thumbnails.records(org.id, query, parsed), self.config.cache.stale_ttl)
        durations = await self.durations.resolve(org, [v.randtag for v in parsed if v.duration_ms is None])
        videos = tuple(v.with_duration(durations.get(v.randtag)) for v in parsed)
        now = self.clock()
        doc = {"fetched_at": now, "videos": [v.to_json() for v in videos]}
        await self.cache.set(
            cache_keys.key("answer", org.id, digest),
            json.dumps(doc).encode(),
            max(self.config.cache.stale_ttl, self.config.cache.search_ttl),
        )
        return OrgAnswer(videos, OrgStatus.OK, now + self.config.cache.search_ttl)

    async def _failed(self, org: Org, digest: str, status: OrgStatus, detail: str) -> OrgAnswer:
        await self.cache.set(cache_keys.key("failed", org.id, digest), status.encode(), FAILURE_MEMORY)
        return OrgAnswer((), status, detail=detail)
