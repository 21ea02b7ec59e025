"""Keeping polled feeds fresh ahead of `search_ttl`, and announcing the ones that change.

Each process, every `INTERVAL` seconds:

1. writes its tally of feed polls to the shared cache (`Subscriptions.flush`);
2. if it holds the refresher's lease (one process across all replicas), takes
   the subscriptions due, those fronted by an upload webhook first and then the
   most polled, and asks their orgs again where an answer expires within
   `lead_time` (`Searcher.refresh_ahead`, spent as `Spend.REFRESH`);

   only while its reader's next poll is near, though: a reader that polls
   every hour would otherwise cost twelve refreshes an hour at a five-minute
   `search_ttl` for the one it reads. From its last two polls the next is
   expected in a window (`Subscription.poll_window`), and the answers are kept
   fresh from just before the window opens until the poll comes or the window
   closes;
3. drops its rendered pages when another process says an upload made them
   old (a counter in the shared cache), so the new video shows at the next poll.

A refreshed open feed is rendered again and announced to the WebSub hub when its
ETag changed (`websub.Announcer`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets

from aggregator.config import Config
from aggregator.freshness.subscriptions import Subscription, Subscriptions
from aggregator.freshness.websub import Announcer
from aggregator.loop.turns import repeat
from aggregator.model import Clock
from aggregator.pages.service import Pages
from aggregator.search.searcher import Searcher
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache, hold_lease

log = logging.getLogger(__name__)
INTERVAL = 1.0  # seconds between passes
BATCH = 500  # subscriptions looked at in one pass
CONCURRENCY = 16  # refreshes under way at once (each a search and maybe some lookups)
LEASE_TTL = 10.0
PAGES_GENERATION = cache_keys.key("pages", "generation")


def lead_time(search_ttl: float) -> float:
    """How long before an answer expires it is fetched again: a fifth of the TTL, 1-60 s.

    Long enough for a search and its lookups to land before the answer goes
    stale, short enough that a refreshed answer lives most of its TTL.
    """
    return max(1.0, min(60.0, search_ttl * 0.2))


class Refresher:
    def __init__(
        self,
        config: Config,
        cache: Cache,
        subscriptions: Subscriptions,
        searcher: Searcher,
        pages: Pages,
        announcer: Announcer,
        clock: Clock,
    ) -> None:
        self.config = config
        self.cache = cache
        self.subscriptions = subscriptions
        self.searcher = searcher
        self.pages = pages
        self.announcer = announcer
        self.clock = clock
        self.lead = lead_time(config.cache.search_ttl)
        self._lease = secrets.token_hex(8).encode()
        self._generation: int | None = None

    async def run(self, every: float = INTERVAL) -> None:
        """Until cancelled: a pass every `every` seconds."""
        await repeat(self.run_once, every, "refresh-ahead")

    async def run_once(self) -> int:
        """One pass; how many subscriptions had an answer fetched again."""
        await self.subscriptions.flush()
        await self._follow_generation()
        if not await hold_lease(self.cache, "refresh", self._lease, LEASE_TTL):
            return 0
        due = await self.subscriptions.due(self.clock(), BATCH)
        # Fronted by a webhook (negative times) first, then the most polled.
        due.sort(key=lambda item: (item[1] >= 0, -item[0].polls))
        slots = asyncio.Semaphore(CONCURRENCY)
        done = await asyncio.gather(
            *(self._keep_fresh(sub, at, slots) for sub, at in due), return_exceptions=True
        )
        for outcome in done:
            if isinstance(outcome, Exception):  # one subscription's trouble is not the pass's
                log.warning("refresh-ahead: a refresh failed (%s)", type(outcome).__name__)
        return sum(1 for outcome in done if outcome is True)

    async def _keep_fresh(self, sub: Subscription, at: float, slots: asyncio.Semaphore) -> bool:
        """Refresh one subscription if its reader's next poll is near; whether anything was fetched."""
        async with slots:
            now = self.clock()
            forced_since = -at if at < 0 else None
            ttl = self.config.cache.search_ttl
            opens, closes = sub.poll_window(ttl)
            if forced_since is None:
                if now < opens - self.lead:  # its reader is not due yet: nothing to keep fresh
                    await self.subscriptions.reschedule(sub.id, opens - self.lead)
                    return False
                if now > closes:  # it missed its poll: look again later, fetch nothing meanwhile
                    await self.subscriptions.reschedule(sub.id, now + (closes - opens))
                    return False
            fetched, next_at = await self.searcher.refresh_ahead(sub.query, sub.orgs, self.lead, forced_since)
            if not math.isfinite(next_at):  # none of its orgs is configured any more
                next_at = now + ttl
            await self.subscriptions.reschedule(sub.id, next_at)
            if fetched:
                if forced_since is not None:  # an upload: rendered pages everywhere are old now
                    self._generation = await self.cache.incr(PAGES_GENERATION, self.config.cache.stale_ttl)
                    self.pages.drop_all()
                await self.announcer.refreshed(sub)
            return fetched

    async def _follow_generation(self) -> None:
        """Drop this process's rendered pages when an upload made them old."""
        raw = await self.cache.get(PAGES_GENERATION)
        try:
            generation = int(raw) if raw is not None else 0  # bytes from Redis, an int in memory
        except ValueError:
            generation = 0
        if self._generation is not None and generation != self._generation:
            self.pages.drop_all()
        self._generation = generation
