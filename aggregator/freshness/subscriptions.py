"""Which feeds are being polled, so that they can be kept fresh ahead of `search_ttl`.

A feed reader fetches the same URL again and again. A feed URL fetched again
within a day (conditional requests included) is a subscription; the refresher
(`refresher.py`) then asks its orgs again shortly before their answers expire,
so the reader's next poll is answered from fresh cache instead of waiting for
every org. A subscription not polled for `cache.subscription_idle` is
forgotten: its record expires.

Records live in the shared cache, so every replica learns from its own polls
and one refresher serves them all. On the request path a poll is one dict
increment (the warm path must stay a lookup); `flush` writes the tallies to
the cache from the background task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.loop.turns import Turn
from aggregator.model import Clock
from aggregator.params import ParamError, params_of_url
from aggregator.render.paging import search_query
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache

log = logging.getLogger(__name__)
POLLED_AGAIN_WITHIN = 86_400.0  # a second poll within a day makes a feed URL a subscription
# A reader's next poll is expected from 0.8 to 1.5 of its last interval after its last:
# readers jitter their schedule by up to about a tenth, and some back off when nothing changes.
WINDOW_OPENS, WINDOW_CLOSES = 0.8, 1.5
MAX_PENDING = 10_000  # distinct feed URLs tallied between flushes; more wait for the next one
FLUSH_BATCH = 200  # feeds written per round of a flush's few cache calls (each round a few ms of the loop)
# Subscriptions kept fresh, in all (every replica): far above what the refresh share can keep
# fresh (docs/benchmarks.md), and a bound on what feed URLs can make Redis hold.
MAX_SUBSCRIPTIONS = 20_000
MAX_PER_CALLER = 200  # subscriptions one client or address makes kept fresh (a reader's whole list)
DUE = cache_keys.key("subs", "due")


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    fmt: str  # the format's name
    query: str  # normalised: what the orgs are asked
    orgs: tuple[str, ...]
    url: str  # the feed's own rel="self": canonical, and never with a caller's token
    open: bool  # fetched without a token: may be announced to a WebSub hub
    polls: int
    first: float
    previous: float
    last: float

    @property
    def subscribed(self) -> bool:
        return self.polls >= 2 and self.last - self.previous <= POLLED_AGAIN_WITHIN

    def poll_window(self, ttl: float) -> tuple[float, float]:
        """When its reader's next poll is expected (epoch seconds), from its last interval.

        A reader that polls within `ttl` is kept fresh all along, until it has
        not polled for two TTLs.
        """
        interval = self.last - self.previous
        if interval <= ttl:
            return self.last, self.last + 2 * ttl
        return self.last + interval * WINDOW_OPENS, self.last + interval * WINDOW_CLOSES

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "fmt": self.fmt,
                "query": self.query,
                "orgs": list(self.orgs),
                "url": self.url,
                "open": self.open,
                "polls": self.polls,
                "first": self.first,
                "previous": self.previous,
                "last": self.last,
            }
        ).encode()

    @classmethod
    def from_json(cls, sub_id: str, raw: bytes) -> Subscription:
        """Raises ValueError, KeyError or TypeError for a record of another shape."""
        doc = json.loads(raw)
        return cls(
            sub_id,
            str(doc["fmt"]),
            str(doc["query"]),
            tuple(str(o) for o in doc["orgs"]),
            str(doc["url"]),
            bool(doc["open"]),
            int(doc["polls"]),
            float(doc["first"]),
            float(doc["previous"]),
            float(doc["last"]),
        )


# A feed polled since the last flush: its record as if it were new, and who polled it
# (`CallerLimits.identity`, for the per-caller cap).
Polled = tuple[Subscription, str]


def _read(sub_id: str, raw: bytes | None) -> Subscription | None:
    """A stored subscription; None when there is none, or one of a shape this version cannot read."""
    if raw is None:
        return None
    try:
        return Subscription.from_json(sub_id, raw)
    except (ValueError, KeyError, TypeError):
        return None


def _by_caller(who: str) -> str:
    """The subscriptions a caller made: `who` is a client's name or an address's digest."""
    return cache_keys.key("subs", "caller", cache_keys.query_digest(who))


def _record(sub_id: str) -> str:
    return cache_keys.key("sub", sub_id)


def _by_org(org_id: str) -> str:
    return cache_keys.key("subs", "org", org_id)


class _Polls:
    """A feed's polls since the last flush, by callers of one scope (the first one kept)."""

    __slots__ = ("caller", "fmt", "path", "polls", "who")

    def __init__(self, fmt: str, path: str, caller: Caller, who: str) -> None:
        self.fmt = fmt
        self.path = path
        self.caller = caller
        self.who = who
        self.polls = 1


class Subscriptions:
    def __init__(self, config: Config, cache: Cache, clock: Clock, paths: Mapping[str, str]) -> None:
        """`paths`: each feed format's path, by format name (to build a subscription's self URL)."""
        self.config = config
        self.cache = cache
        self.clock = clock
        self.paths = paths
        self._pending: dict[str, _Polls] = {}

    def polled_again(self, key: str) -> bool:
        """Counts a poll of a feed already tallied in this flush interval under `key` (see
        `polled`): the warm path's whole tally, one lookup. False: not tallied yet."""
        seen = self._pending.get(key)
        if seen is None:
            return False
        seen.polls += 1
        return True

    def polled(self, key: str, fmt: str, path: str, caller: Caller, who: Callable[[], str] = str) -> None:
        """A feed was fetched: `fmt` names its format, `path` is the raw path with its query, `key`
        names the three (with the caller's scope) one to one, as the page cache's key does; `who()`
        names the caller (a client's name or a digest of its address: `CallerLimits.identity`),
        asked only for the first poll of a URL in a flush interval."""
        if self.polled_again(key):
            return
        if len(self._pending) < MAX_PENDING:
            self._pending[key] = _Polls(fmt, path, caller, who())

    async def flush(self) -> None:
        """Write the tallied polls to the cache, `FLUSH_BATCH` feeds to a few round trips."""
        pending, self._pending = self._pending, {}
        # The in-process cache answers without suspending: without turns, a flush of thousands of
        # polled URLs (a Redis outage, a service without Redis) would hold the loop for seconds.
        now = self.clock()
        turn = Turn()
        polled: dict[str, Polled] = {}  # by subscription: two spellings of one feed are one
        for tallied in pending.values():
            if turn.due():
                await turn.end()
            found = self._identify(tallied.fmt, tallied.path, tallied.caller)
            if found is None:
                continue
            sub_id, query, orgs, url = found
            seen = polled.get(sub_id)
            polls = tallied.polls + (seen[0].polls if seen is not None else 0)
            open_ = tallied.caller.client is None
            sub = Subscription(sub_id, tallied.fmt, query, orgs, url, open_, polls, now, now, now)
            polled[sub_id] = (sub, tallied.who)
        batch = list(polled.values())
        for start in range(0, len(batch), FLUSH_BATCH):
            await self._write(batch[start : start + FLUSH_BATCH])

    async def _write(self, batch: Sequence[Polled]) -> None:
        idle = self.config.cache.subscription_idle
        raws = await self.cache.get_many([_record(polled.id) for polled, _ in batch])
        records: dict[float, list[tuple[str, bytes]]] = {idle: [], POLLED_AGAIN_WITHIN: []}
        new: list[Polled] = []
        fresh: list[Subscription] = []  # kept fresh already: their orgs' indexes are renewed
        turn = Turn()
        for (polled, who), raw in zip(batch, raws, strict=True):
            if turn.due():
                await turn.end()
            known = _read(polled.id, raw)
            sub = polled
            if known is not None:
                sub = replace(known, polls=known.polls + polled.polls, previous=known.last, last=polled.last)
            # Several polls in one flush interval are one poll again within a day, too. A URL
            # fetched once is remembered only as long as a second fetch would still count.
            records[idle if sub.subscribed else POLLED_AGAIN_WITHIN].append((_record(sub.id), sub.to_json()))
            if sub.subscribed and known is not None and known.subscribed:
                fresh.append(sub)
            elif sub.subscribed:
                new.append((sub, who))
        for ttl, items in records.items():
            await self.cache.set_many(items, ttl)
        # New ones are kept fresh only below the caps; the others are fetched when polled, like any feed.
        admitted = await self._admit(new)
        if admitted:
            await self.cache.schedule(DUE, {sub.id: sub.last for sub in admitted}, idle)
        by_org: dict[str, dict[str, float]] = {}
        for sub in (*fresh, *admitted):
            for org_id in sub.orgs:
                by_org.setdefault(org_id, {})[sub.id] = sub.last
        for org_id, members in by_org.items():
            await self.cache.schedule(_by_org(org_id), members, idle)

    async def _admit(self, new: Sequence[Polled]) -> list[Subscription]:
        """The new subscriptions that fit under both caps, in all and for their caller; each is
        counted as its caller's (for `subscription_idle` after it was made)."""
        room = MAX_SUBSCRIPTIONS - await self.count()
        idle = self.config.cache.subscription_idle
        by_caller: dict[str, list[Subscription]] = {}
        for sub, who in new:
            by_caller.setdefault(who, []).append(sub)
        admitted: list[Subscription] = []
        for who, theirs in by_caller.items():
            if who:
                made = await self.cache.scheduled(_by_caller(who), float("inf"), MAX_PER_CALLER + 1)
                recent = sum(1 for _, at in made if at > theirs[0].last - idle)
                theirs = theirs[: max(0, MAX_PER_CALLER - recent)]
            theirs = theirs[: max(0, room - len(admitted))]
            if who and theirs:
                await self.cache.schedule(_by_caller(who), {sub.id: sub.last for sub in theirs}, idle)
            admitted.extend(theirs)
        return admitted

    def _identify(self, fmt: str, path: str, caller: Caller) -> tuple[str, str, tuple[str, ...], str] | None:
        """(id, normalised query, orgs, canonical self URL) of a polled feed; None if it is not a search."""
        try:
            params = params_of_url(path, caller.visible_orgs)
        except ParamError:
            return None
        if params.start_index != 1:
            # Readers subscribe to a search's first page. Pages past it are not remembered: a
            # client paging through 3,000 of them must not leave 3,000 records in Redis.
            return None
        canonical = search_query(params, all_orgs=caller.visible_orgs)
        url = f"{self.config.server.public_url}{self.paths[fmt]}?{canonical}"
        sub_id = cache_keys.query_digest("\x1f".join((fmt, canonical, ",".join(params.orgs))))
        return sub_id, params.normalised_query, params.orgs, url

    async def due(self, until: float, count: int) -> list[tuple[Subscription, float]]:
        """Subscriptions due for a refresh by `until`, with their due time; forgotten ones are dropped."""
        found = await self.cache.scheduled(DUE, until, count)
        if not found:
            return []
        raws = await self.cache.get_many([_record(sub_id) for sub_id, _ in found])
        out: list[tuple[Subscription, float]] = []
        gone: list[str] = []
        for (sub_id, at), raw in zip(found, raws, strict=True):
            sub = _read(sub_id, raw)
            if sub is None or self.clock() - sub.last > self.config.cache.subscription_idle:
                gone.append(sub_id)
            else:
                out.append((sub, at))
        await self.cache.unschedule(DUE, gone)
        return out

    async def reschedule(self, sub_id: str, at: float) -> None:
        await self.cache.schedule(DUE, {sub_id: at}, self.config.cache.subscription_idle)

    async def front(self, org_id: str) -> int:
        """Put every subscription that asks this org at the front of the queue; how many there were.

        Their due time becomes minus now: earlier than any real time, so first in
        the queue, and it still says since when they must be fetched again,
        fresh or not (`forced_since`).
        """
        index = _by_org(org_id)
        forgotten = await self.cache.scheduled(
            index, self.clock() - self.config.cache.subscription_idle, 100_000
        )
        await self.cache.unschedule(index, [sub_id for sub_id, _ in forgotten])
        members = await self.cache.scheduled(index, float("inf"), 100_000)
        if members:
            fronted = -self.clock()
            await self.cache.schedule(
                DUE, {sub_id: fronted for sub_id, _ in members}, self.config.cache.subscription_idle
            )
        return len(members)

    async def count(self) -> int:
        return await self.cache.schedule_size(DUE)
