"""Stable thumbnail URLs over upstream's expiring, re-signed ones.

Feeds point at `/thumbnails/{randtag}` on this service. Each org answer
records, per video, upstream's current signed URL and the org and query that
showed it; the handler redirects there. A URL close to its `Expires=` is
refreshed by asking that org the same query again (through the answer
cache's shared fetch), so a reader opening an old feed still gets a picture.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from aggregator import cache as cache_keys
from aggregator.cache import Cache
from aggregator.model import Clock, Video

MARGIN = 60.0  # seconds: a URL expiring sooner than this is refreshed first
FALLBACK = "/icon-64.png"

# (org id, normalised query) -> None, once the org has been asked again
Refresh = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    cacheable: bool  # False for the fallback icon: the next request may do better


def records(org_id: str, query: str, videos: Iterable[Video]) -> list[tuple[str, bytes]]:
    """The cache entries an org answer leaves for its videos' thumbnails."""
    return [
        (
            cache_keys.key("thumb", v.randtag),
            json.dumps({"url": v.thumbnail_url, "org": org_id, "q": query}).encode(),
        )
        for v in videos
        if v.thumbnail_url
    ]


def signed_url_expires(url: str) -> float:
    """CloudFront-style `Expires=` (epoch seconds); a URL without one never expires."""
    values = parse_qs(urlsplit(url).query).get("Expires")
    if not values or not values[0].isdigit():
        return float("inf")
    return float(values[0])


class Thumbnails:
    def __init__(self, cache: Cache, refresh: Refresh, clock: Clock) -> None:
        self.cache = cache
        self.refresh = refresh
        self.clock = clock

    async def redirect(self, randtag: str) -> Redirect | None:
        """Where `/thumbnails/{randtag}` leads now; None for a video no answer has shown."""
        record = await self._record(randtag)
        if record is None:
            return None
        url, org_id, query = record
        if signed_url_expires(url) < self.clock() + MARGIN:
            await self.refresh(org_id, query)
            record = await self._record(randtag)
            if record is None or signed_url_expires(record[0]) < self.clock():
                return Redirect(FALLBACK, cacheable=False)
            url = record[0]
        return Redirect(url, cacheable=True)

    async def _record(self, randtag: str) -> tuple[str, str, str] | None:
        raw = await self.cache.get(cache_keys.key("thumb", randtag))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            url, org_id, query = doc["url"], doc["org"], doc["q"]
        except (ValueError, KeyError, TypeError):
            return None
        if not all(isinstance(x, str) for x in (url, org_id, query)):
            return None
        return url, org_id, query
