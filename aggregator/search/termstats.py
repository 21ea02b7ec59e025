"""How many videos hold each term, over every organisation: the statistics relevance scores share.

How much a matched term says (its inverse document frequency) must come from one
collection, every org's videos together. Each org's own engine weighs terms by
its own catalogue, so a term common in a large faculty and rare in a small
department would otherwise rank the department's weak matches first; one set of
statistics puts every org's answer on one scale (Rasolofo, Hawking & Savoy 2003).

Learned from the answers the service parses: each process counts each video it
sees once (a bounded set of randtags), and adds its counts to counters shared by
every replica through the cache (a Redis hash, `terms:df`; the field `#` counts
videos). Scores read them as a snapshot taken at most every `SNAPSHOT_EVERY`
seconds, numbered, so between snapshots the same answers give the same order and
bytes and feeds do not churn. A caller's scores thus reflect how common its
terms are in orgs it cannot see: counts only, never a video.

Each snapshot also reads the shared sample of videos' terms that tells which words
go together (`associations`); each process adds the videos it learns, at most
`MAX_SAMPLED` a snapshot.

Bounded: at most `MAX_TERMS_PER_VIDEO` distinct terms of a video are counted,
terms are at most `terms.MAX_WORD` long, the sample keeps `SAMPLE_SIZE` videos,
and both expire a month after they last grew.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aggregator.model import Clock, Video
from aggregator.search.associations import SAMPLE_SIZE, Associations
from aggregator.store import keys
from aggregator.store.cache import Cache

SNAPSHOT_EVERY = 300.0  # seconds between snapshots at most
COUNTERS_TTL = 30 * 86_400.0
MAX_TERMS_PER_VIDEO = 64
MAX_SEEN = 200_000  # randtags a process remembers having counted
VIDEOS = "#"  # the counters' field that counts videos (a term is letters and digits only)
COUNTERS = keys.key("terms", "df")
SAMPLE = keys.key("terms", "sample")
MAX_SAMPLED = 5_000  # videos a process adds to the sample between snapshots, at most
MAX_SAMPLE_ENTRY = 512  # bytes of a video's terms in the sample: 10 MB for the whole sample at most


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int  # 0 before the first; the same version, the same statistics
    videos: int
    df: Mapping[str, int] = field(default_factory=dict)
    associations: Associations = field(default_factory=Associations.empty)


class TermStats:
    def __init__(self, cache: Cache, clock: Clock = time.time) -> None:
        self._cache = cache
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, int] = {}
        self._sampled: list[bytes] = []
        self._snapshot = Snapshot(0, 0)
        self._next_at = 0.0

    def learn(self, videos: Iterable[Video]) -> None:
        """Count the videos not counted before by this process (on the loop: a few µs a video)."""
        pending, seen = self._pending, self._seen
        for video in videos:
            if video.randtag in seen:
                continue
            seen[video.randtag] = None
            if len(seen) > MAX_SEEN:
                seen.popitem(last=False)
            counted = sorted(set(" ".join(video.terms).split()))[:MAX_TERMS_PER_VIDEO]
            for term in counted:
                pending[term] = pending.get(term, 0) + 1
            pending[VIDEOS] = pending.get(VIDEOS, 0) + 1
            if counted and len(self._sampled) < MAX_SAMPLED:
                entry = " ".join(counted).encode()
                if len(entry) > MAX_SAMPLE_ENTRY:  # whole words only: no cut one becomes another
                    entry = entry[: MAX_SAMPLE_ENTRY + 1].rsplit(b" ", 1)[0]
                self._sampled.append(entry)

    async def snapshot(self) -> Snapshot:
        """The statistics in force: the last snapshot, or a new one if it is `SNAPSHOT_EVERY` old."""
        now = self._clock()
        if now < self._next_at:
            return self._snapshot
        self._next_at = now + SNAPSHOT_EVERY
        pending, self._pending = self._pending, {}
        sampled, self._sampled = self._sampled, []
        await self._cache.add_counts(COUNTERS, pending, COUNTERS_TTL)
        await self._cache.keep_latest(SAMPLE, sampled, SAMPLE_SIZE, COUNTERS_TTL)
        counts = await self._cache.counts(COUNTERS)
        videos = counts.pop(VIDEOS, 0)
        associations = await Associations.of(await self._cache.latest(SAMPLE))
        self._snapshot = Snapshot(self._snapshot.version + 1, videos, counts, associations)
        return self._snapshot
