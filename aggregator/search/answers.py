"""One organisation's answer to one query: from the cache, from a shared fetch, or stale.

An org's parsed answer (videos with durations) is cached under the normalised
query; it is fresh for `search_ttl` after it was fetched and kept for
`stale_ttl` as the last good answer to fall back on when the org fails.
Concurrent misses for the same org and query make one upstream request: in
one process they share a flight, across processes a short Redis lock elects
one fetcher while the others wait for its answer to land, with a bounded wait
and a fallback to fetching themselves.

The fetcher asks ilos through `ilos.searches` (behind the org's breaker and
budget, parsed off the loop). Durations it does not know yet are left to the
searcher, which looks up at once those of the videos a page shows, once every
org's answer is merged, and defers the rest. An answer
missing some is stored with their randtags as `pending`, and fills them in from the duration cache each time
it is read, as the lookups behind it land. (A polled feed's refresh waits at
most `duration_wait` for its lookups, within the refresh share.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aggregator.config import Config, Org
from aggregator.ilos.budget import Spend
from aggregator.ilos.durations import DurationLookups
from aggregator.ilos.searches import OrgSearches
from aggregator.loop.flights import Flights
from aggregator.loop.turns import in_turns
from aggregator.metrics import Metrics
from aggregator.model import Clock, OrgStatus, Video
from aggregator.search import thumbnails
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache

log = logging.getLogger(__name__)

FAILURE_MEMORY = 5.0  # seconds other processes are told that a fetch just failed
WAIT_POLL = 0.02
RETRY_REFRESH = 30.0  # seconds before a refresh that could not be made is tried again
REFRESH_AFTER = 60.0  # seconds: an answer younger than this has the newest signatures to be had


@dataclass(frozen=True, slots=True)
class OrgAnswer:
    videos: tuple[Video, ...]
    status: OrgStatus
    fresh_until: float = 0.0  # epoch seconds; 0 when nothing fresh was had
    detail: str = ""  # safe to log and show: never a key or upstream text


# An org's answer that did not come within the search's deadline.
TIMED_OUT = OrgAnswer((), OrgStatus.TIMEOUT, detail="no answer within the search deadline")


@dataclass(frozen=True, slots=True)
class _Stored:
    """An answer as stored: the parse worker's JSON lines, kept as they came, and what the
    service filled in since (durations: randtag -> (milliseconds or None, still pending))."""

    fetched_at: float
    videos: tuple[Video, ...]
    lines: bytes
    filled: dict[str, tuple[int | None, bool]]


class AnswerSource:
    def __init__(
        self,
        config: Config,
        cache: Cache,
        searches: OrgSearches,
        durations: DurationLookups,
        metrics: Metrics,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.cache = cache
        self.searches = searches
        self.metrics = metrics
        self.durations = durations
        self._flights: Flights[tuple[str, str], OrgAnswer] = Flights("search")

    async def answer(self, org: Org, query: str, wait: float, spend: Spend = Spend.SEARCH) -> OrgAnswer:
        """`query` is already normalised (lower-cased, whitespace folded); `wait` bounds the time taken;
        `spend` is what a fetch would be (`Spend.SEARCH`, or `ONE_OFF` for a query asked for the first time)."""
        digest = cache_keys.query_digest(query)
        stored = await self._read(org, digest)
        ttl = self.config.cache.search_ttl
        now = self.clock()
        if stored is not None and now < stored.fetched_at + ttl:
            self.metrics.cache_lookups.labels("answer", "hit").inc()
            return OrgAnswer(stored.videos, OrgStatus.CACHED, self._fresh_until(stored))
        self.metrics.cache_lookups.labels("answer", "stale" if stored is not None else "miss").inc()
        if stored is not None and now < stored.fetched_at + ttl + self.config.cache.stale_while_revalidate:
            # Stale-while-revalidate: answer now, refresh behind the answer (one fetch, shared).
            self._flight(org, query, digest, spend)
            return OrgAnswer(stored.videos, OrgStatus.STALE, 0.0, "refreshing")
        try:
            fresh = await asyncio.wait_for(
                asyncio.shield(self._flight(org, query, digest, spend)), max(wait, 0.001)
            )
        except TimeoutError:
            fresh = TIMED_OUT
        if fresh.status.good or stored is None:
            return fresh
        return OrgAnswer(stored.videos, OrgStatus.STALE, 0.0, fresh.detail or fresh.status)

    async def stop(self) -> None:
        """Cancel the searches under way (shutdown): each releases its lock as it ends."""
        await self._flights.stop()

    async def refresh(self, org_id: str, query: str) -> None:
        """Ask the org again for thumbnails' new signatures, unless it was asked within `REFRESH_AFTER`.

        The fetch is the shared one, behind the org's breaker and budget: a burst
        of readers opening expiring thumbnails costs one search at most, and none
        while the org is cooling down.
        """
        org = self.config.org(org_id)
        if org is None:
            return
        digest = cache_keys.query_digest(query)
        stored = await self._read(org, digest)
        if stored is not None and self.clock() - stored.fetched_at < REFRESH_AFTER:
            return
        await self._flight(org, query, digest)

    async def refresh_ahead(
        self, org: Org, query: str, lead: float, forced_since: float | None = None
    ) -> tuple[str, float]:
        """Keep a polled feed's answer fresh: fetch it again when it expires within `lead` seconds.

        Returns what happened ("fresh", "refreshed", "failed" or "later") and when
        to look again. Spent as `Spend.REFRESH`: after searches and the lookups of what pages
        show, before the lookups of what they do not, within `refresh_share`.
        `forced_since` (when an upload webhook came) fetches even a fresh answer,
        unless it was fetched since.
        """
        digest = cache_keys.query_digest(query)
        now = self.clock()
        ttl = self.config.cache.search_ttl
        retry = now + min(RETRY_REFRESH, ttl / 2)
        stored = await self._read(org, digest)
        forced = forced_since is not None and (stored is None or stored.fetched_at <= forced_since)
        if stored is not None and not forced and stored.fetched_at + ttl - now > lead:
            return "fresh", stored.fetched_at + ttl - lead
        answer = await self._flight(org, query, digest, Spend.REFRESH)
        if answer.status.good:
            return "refreshed", self.clock() + ttl - lead
        return ("later" if answer.status is OrgStatus.SKIPPED else "failed"), retry

    def _fresh_until(self, stored: _Stored) -> float:
        """Until when pages built on this answer may be reused (a page that shows a video of unknown
        length is reused for less: `Searcher.search`)."""
        return stored.fetched_at + self.config.cache.search_ttl

    async def _read(self, org: Org, digest: str) -> _Stored | None:
        key = cache_keys.key("answer", org.id, digest)
        raw = await self.cache.get(key)
        if raw is None:
            return None
        try:
            stored = await _decode(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("dropping an unreadable cached answer for org=%s", org.id)
            return None
        pending = [v.randtag for v in stored.videos if v.duration_pending]
        if not pending:
            return stored
        # Heal: durations looked up behind the answer since it was stored.
        landed = await self.durations.known(org, pending)
        if not landed:
            return stored
        filled = stored.filled | {tag: (ms, False) for tag, ms in landed.items()}
        whole = _Stored(
            stored.fetched_at,
            tuple(await in_turns(stored.videos, functools.partial(healed, landed))),
            stored.lines,
            filled,
        )
        await self._store(key, whole)
        return whole

    def _flight(
        self, org: Org, query: str, digest: str, spend: Spend = Spend.SEARCH
    ) -> asyncio.Task[OrgAnswer]:
        """The fetch under way for this org and query, started if there is none."""
        return self._flights.start((org.id, digest), lambda: self._locked_fetch(org, query, digest, spend))

    async def _locked_fetch(self, org: Org, query: str, digest: str, spend: Spend) -> OrgAnswer:
        """One fetch per org and query across the processes that share the cache."""
        lock = cache_keys.key("lock", org.id, digest)
        token = secrets.token_hex(8).encode()
        hold = self.config.upstream.timeout * 2 + self.config.upstream.duration_wait + 2
        if await self.cache.add(lock, token, hold):
            try:
                return await self._fetch(org, query, digest, spend)
            finally:
                await self.cache.delete_if(lock, token)
        waited = await self._wait_for_other(org, digest, lock, self.clock(), hold)
        return waited if waited is not None else await self._fetch(org, query, digest, spend)

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
                return OrgAnswer(stored.videos, OrgStatus.CACHED, self._fresh_until(stored))
            status = await self.cache.get(failed)
            if status is not None:
                return OrgAnswer((), OrgStatus.parse(status), detail="failed in another process")
            if released:
                return None  # the holder gave up without a word: ask ourselves
        return None

    async def _fetch(self, org: Org, query: str, digest: str, spend: Spend) -> OrgAnswer:
        asked = await self.searches.ask(org, query, spend)
        if asked.status is not OrgStatus.OK:
            return await self._failed(org, digest, asked.status, asked.detail)
        parsed = asked.videos
        # Each pass over a 500-video answer costs a few ms, so each is cut into
        # turns of the loop (`in_turns`): run together they held it 10-35 ms.
        records = await in_turns(parsed, functools.partial(thumbnails.record, org.id, query))
        await self.cache.set_many([r for r in records if r is not None], self.config.cache.stale_ttl)
        missing = [v.randtag for v in parsed if v.duration_ms is None]
        if spend is Spend.REFRESH:  # a polled feed kept fresh ahead: its lookups within the refresh share
            durations = await self.durations.resolve(org, missing, self.config.upstream.duration_wait, spend)
        else:
            # Only the durations known already: the searcher looks up those of the videos its page
            # shows once the orgs' answers are merged, and defers the rest (`Searcher.search`).
            durations = await self.durations.known(org, missing)
        filled = {tag: (durations.get(tag), tag not in durations) for tag in missing}
        videos = tuple(await in_turns(parsed, functools.partial(_filled_in, filled)))
        stored = _Stored(self.clock(), videos, asked.lines, filled)
        await self._store(cache_keys.key("answer", org.id, digest), stored)
        return OrgAnswer(videos, OrgStatus.OK, self._fresh_until(stored))

    async def _store(self, key: str, stored: _Stored) -> None:
        ttl = max(self.config.cache.stale_ttl, self.config.cache.search_ttl)
        await self.cache.set(key, await _encode(stored), ttl)

    async def _failed(self, org: Org, digest: str, status: OrgStatus, detail: str) -> OrgAnswer:
        await self.cache.set(cache_keys.key("failed", org.id, digest), status.encode(), FAILURE_MEMORY)
        return OrgAnswer((), status, detail=detail)


async def _encode(stored: _Stored) -> bytes:
    """A head line (when it was fetched, the durations filled in), then the parse worker's lines.

    The videos are not encoded again: the worker's lines are stored as they came
    (a 500-video answer's JSON is ~10 ms of the loop's CPU, cut into turns, which
    was spent on every fetch), and what changed since is the head's `filled`.
    """
    filled = {tag: [ms, pending] for tag, (ms, pending) in stored.filled.items()}
    return json.dumps({"fetched_at": stored.fetched_at, "filled": filled}).encode() + b"\n" + stored.lines


async def _decode(raw: bytes) -> _Stored:
    """Raises ValueError, KeyError or TypeError for a record of another shape."""
    head_line, _, lines = raw.partition(b"\n")
    head = json.loads(head_line)
    fetched_at = float(head["fetched_at"])
    filled = {
        str(tag): (None if ms is None else int(ms), bool(pending))
        for tag, (ms, pending) in head["filled"].items()
    }
    decode = functools.partial(_decoded, filled)
    videos = tuple(await in_turns(lines.split(b"\n") if lines else [], decode))
    return _Stored(fetched_at, videos, lines, filled)


def _decoded(filled: Mapping[str, tuple[int | None, bool]], line: bytes) -> Video:
    return _filled_in(filled, Video.from_line(line))


def _filled_in(filled: Mapping[str, tuple[int | None, bool]], video: Video) -> Video:
    """A video as the worker parsed it, with what the service filled in: its duration, or pending."""
    found = filled.get(video.randtag)
    if found is None:
        return video
    return replace(video, duration_ms=found[0], duration_pending=found[1])


def healed(landed: Mapping[str, int | None], video: Video) -> Video:
    """A video with the duration that landed for it, if it was pending (a stored answer's, or a
    merged result the page shows: `Searcher`)."""
    if video.duration_pending and video.randtag in landed:
        return replace(video, duration_ms=landed[video.randtag], duration_pending=False)
    return video
