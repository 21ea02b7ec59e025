"""Rendered pages: the page cache, the renders under way, and when each page was first seen.

A page (one format, variant, caller scope and set of search parameters) is
rendered once, compressed once and kept in-process until the first of its org
answers goes stale. Concurrent requests for a page share one render. Its
`Last-Modified` is when that representation first appeared with its current
ETag, remembered in the shared cache so every replica says the same.

The search handler and the refresher (which renders a refreshed feed again so its
next poll is a hit) both come here; nothing here knows of HTTP.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.loop.deadlines import within
from aggregator.loop.flights import Flights
from aggregator.model import Clock
from aggregator.pages.cached_page import CachedPage, body_etag, build_page, first_seen, remember
from aggregator.pages.view import view_of
from aggregator.params import SearchParams
from aggregator.render.formats import Format
from aggregator.search.searcher import Searcher
from aggregator.store import keys
from aggregator.store.cache import Cache, pages_share
from aggregator.store.memory import MemoryCache


def page_key(fmt: Format, variant: str, caller: Caller, params: SearchParams) -> str:
    """What tells rendered pages apart: everything that changes the bytes, nothing else."""
    return "\x1f".join(
        (
            fmt.name,
            variant,
            caller.cache_scope,
            params.q,
            ",".join(params.orgs),
            params.sort,
            str(params.count),
            str(params.start_index),
            params.length or "",
            params.after.isoformat() if params.after else "",
        )
    )


class Pages:
    def __init__(self, config: Config, cache: Cache, searcher: Searcher, clock: Clock) -> None:
        self.config = config
        self._cache = cache
        self._searcher = searcher
        self._clock = clock
        self._kept = MemoryCache(pages_share(config.cache.memory_max_bytes), clock=clock)
        self._rendering: Flights[str, CachedPage] = Flights("render")

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def bytes(self) -> int:
        return self._kept.bytes

    def kept(self, key: str) -> CachedPage | None:
        """A page rendered before under `key` (a page key, or the exact request path and scope)."""
        page: CachedPage | None = self._kept.get_now(key)
        return page

    def keep(self, key: str, page: CachedPage) -> None:
        """Keep a rendered page under `key` until the first of its org answers goes stale."""
        ttl = page.expires_at - self._clock()
        if ttl > 0:
            self._kept.set_now(key, page, ttl)

    def drop_all(self) -> None:
        """Forget every rendered page of this process (an upload made them old)."""
        self._kept.clear()

    async def served_etag(self, key: str) -> str | None:
        """The ETag the page under `key` was last served with, by any replica; None if never."""
        etag, _ = await first_seen(self._cache, _record(key))
        return etag

    async def render(
        self, key: str, fmt: Format, variant: str, caller: Caller, params: SearchParams, caller_id: str
    ) -> CachedPage:
        """The page under `key`, rendered now (or by the render already under way) and kept.

        `caller_id` names who asked, for the suggestions' count of distinct callers.
        """
        return await self._rendering.join(
            key, lambda: self._render(key, fmt, variant, caller, params, caller_id)
        )

    async def _render(
        self, key: str, fmt: Format, variant: str, caller: Caller, params: SearchParams, caller_id: str
    ) -> CachedPage:
        config = self.config
        assert fmt.render is not None  # only formats with a renderer have pages
        # What the page shows first has its durations looked up now; a length filter needs them all.
        shown = None if params.length is not None else params.start_index - 1 + params.count
        answer = await self._searcher.search(
            params.normalised_query, params.orgs, params.sort, caller_id, shown
        )
        # A turn of the loop before the page is built: the search's last step (learning its
        # last titles) and the render (3-9 ms for 20 entries on a slow machine) were one step.
        await asyncio.sleep(0)
        view = view_of(config, fmt, variant, caller, params, answer)
        now = self._clock()
        # Last-Modified is when this representation first appeared with its current ETag, kept
        # in the shared cache; a page with no dated entry is dated by that time too (never 1970).
        record = _record(key)
        # Within the search's deadline, like every wait on Redis: unknown in time, the page is
        # dated now (its Last-Modified moves once; its bytes, and so its ETag, only if dated by it).
        nothing: tuple[str | None, float | None] = (None, None)
        # Only a search's first pages are remembered: pages past them are dated when rendered, so
        # that paging through 3,000 of them leaves nothing in Redis.
        shared = params.start_index == 1
        seen_etag, seen_at = (
            await within(answer.deadline, first_seen(self._cache, record), nothing) if shared else nothing
        )
        # On the loop, in turns: a 100-entry page takes 15-40 ms, and in a thread it would cost the
        # loop more than that in waits for the GIL while it sends and receives (measured: 25 ms a turn).
        body = await fmt.render(replace(view, first_seen=_utc(seen_at or now)))
        if seen_etag != body_etag(body) and seen_at is not None and view.uses_first_seen:
            # changed: dated by now, like its validator
            body = await fmt.render(replace(view, first_seen=_utc(now)))
        etag = body_etag(body)
        if etag != seen_etag:
            seen_at = now
            if shared:
                await within(
                    answer.deadline, remember(self._cache, record, etag, now, config.cache.stale_ttl), None
                )
        page = build_page(
            body,
            fmt.content_type,
            seen_at or now,
            answer.fresh_until,
            answer.reports,
            answer.complete,
            now,
            answer.pending_durations,
            next((url for r in view.page.results if (url := view.thumbnail_url(r))), None),
        )
        self.keep(key, page)
        return page


def _record(key: str) -> str:
    """The shared record of when the page under `key` was first seen."""
    return keys.key("page", keys.query_digest(key))


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)
