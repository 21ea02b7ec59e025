"""Annotating videos with their durations from the metadata endpoint.

A duration never changes, so it is cached per randtag for `duration_ttl`
whatever query or org found the video; a failed lookup is remembered for
`failed_duration_ttl` so a broken video is not asked about on every request.
Lookups run concurrently but at most `metadata_concurrency` at a time per org
(ilos is believed to allow about 60 requests a minute per key), and two
searches that need the same video's duration share one request.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import aiohttp

from aggregator import cache as cache_keys
from aggregator.cache import Cache
from aggregator.config import Config, Org
from aggregator.metrics import Metrics
from aggregator.upstream import Outcome, fetch_duration

log = logging.getLogger(__name__)
UNKNOWN = b"-"


class DurationLookups:
    def __init__(
        self, config: Config, session: aiohttp.ClientSession, cache: Cache, metrics: Metrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.session = session
        self.cache = cache
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._inflight: dict[str, asyncio.Task[int | None]] = {}

    async def resolve(self, org: Org, randtags: list[str]) -> dict[str, int | None]:
        if not randtags:
            return {}
        found: dict[str, int | None] = {}
        pending: dict[str, asyncio.Task[int | None]] = {}
        missing = [t for t in randtags if t not in self._inflight]
        cached = await self.cache.get_many([cache_keys.key("duration", t) for t in missing])
        for tag, value in zip(missing, cached, strict=False):
            if value is not None:
                found[tag] = None if value == UNKNOWN else int(value)
        for tag in randtags:
            if tag in found:
                continue
            task = self._inflight.get(tag)
            if task is None:
                task = asyncio.ensure_future(self._lookup(org, tag))
                self._inflight[tag] = task
                task.add_done_callback(functools.partial(self._landed, tag))
            pending[tag] = task
        for tag, task in pending.items():
            found[tag] = await asyncio.shield(task)
        return found

    def _landed(self, randtag: str, _task: asyncio.Task[int | None]) -> None:
        self._inflight.pop(randtag, None)

    async def _lookup(self, org: Org, randtag: str) -> int | None:
        limit = self._limits.get(org.id)
        if limit is None:
            limit = self._limits[org.id] = asyncio.Semaphore(self.config.upstream.metadata_concurrency)
        async with limit:
            answer = await fetch_duration(self.session, org, randtag, self.config.upstream)
        self.metrics.upstream.labels(org.id, "metadata", answer.outcome.value).inc()
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
        if answer.outcome in (Outcome.UNPARSEABLE, Outcome.HTTP_ERROR):
            # The video itself is the problem (level: error, 404): do not ask again soon.
            await self.cache.set(cache_key, UNKNOWN, self.config.cache.failed_duration_ttl)
        return None
