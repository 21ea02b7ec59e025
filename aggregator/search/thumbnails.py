"""Stable thumbnail URLs over upstream's expiring, re-signed ones.

Feeds point at `/thumbnails/{randtag}` on this service. Each org answer
records, per org and video, upstream's current signed URL and the query that
showed it; the handler redirects there. A URL close to its `Expires=` is
refreshed by asking that org the same query again, through the answer cache,
the org's breaker and its budget (`answers.AnswerSource.refresh`), so a reader
opening an old feed still gets a picture and a burst of such readers costs
one search at most.

With `[[clients]]` configured a thumbnail URL carries its scope, the orgs its
feed may show, and a short HMAC of it (`server.signing_secret`): feed readers
fetch pictures without a token, and a URL leads only to a picture of a video
one of those orgs returned.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from urllib.parse import parse_qs, urlencode, urlsplit

from aggregator.config import Config
from aggregator.model import Clock, Video
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache

MARGIN = 60.0  # seconds: a URL expiring sooner than this is refreshed first
FALLBACK = "/icon-64.png"

# (org id, normalised query) -> None, once the org has been asked again (or need not be)
Refresh = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    cacheable: bool  # False for the fallback icon: the next request may do better


def record(org_id: str, query: str, video: Video) -> tuple[str, bytes] | None:
    """The cache entry an org answer leaves for one video's thumbnail, keyed by org and randtag."""
    if not video.thumbnail_url:
        return None
    return cache_keys.key("thumb", org_id, video.randtag), json.dumps(
        {"url": video.thumbnail_url, "q": query}
    ).encode()


def scope_secret(config: Config) -> str | None:
    """Thumbnail URLs are scoped only where callers are: an open service shows every org to everyone."""
    return config.server.signing_secret if config.clients else None


def scope_query(secret: str | None, orgs: Sequence[str]) -> str:
    """The query string a scoped thumbnail URL carries; empty for an open service (every org)."""
    if secret is None:
        return ""
    joined = ",".join(orgs)
    return "?" + urlencode({"orgs": joined, "sig": _signature(secret, joined)})


def scope_of(secret: str | None, all_orgs: Sequence[str], query: dict[str, str]) -> tuple[str, ...] | None:
    """The orgs a thumbnail request may see; None when its signature does not hold."""
    if secret is None:
        return tuple(all_orgs)
    joined, signature = query.get("orgs", ""), query.get("sig", "")
    if not hmac.compare_digest(signature.encode(), _signature(secret, joined).encode()):
        return None
    wanted = set(joined.split(","))
    return tuple(o for o in all_orgs if o in wanted)


def _signature(secret: str, joined_orgs: str) -> str:
    return hmac.new(secret.encode(), f"thumbnail-scope|{joined_orgs}".encode(), sha256).hexdigest()[:20]


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

    async def redirect(self, randtag: str, orgs: Sequence[str]) -> Redirect | None:
        """Where `/thumbnails/{randtag}` leads now for a caller who sees `orgs`; None for a video they never got."""
        found = await self._record(randtag, orgs)
        if found is None:
            return None
        org_id, url, query = found
        if signed_url_expires(url) < self.clock() + MARGIN:
            await self.refresh(org_id, query)
            found = await self._record(randtag, (org_id,))
            if found is None or signed_url_expires(found[1]) < self.clock():
                return Redirect(FALLBACK, cacheable=False)
            url = found[1]
        return Redirect(url, cacheable=True)

    async def _record(self, randtag: str, orgs: Sequence[str]) -> tuple[str, str, str] | None:
        """(org, url, query) from the first of `orgs` that showed this video."""
        if not orgs:
            return None
        raws = await self.cache.get_many([cache_keys.key("thumb", o, randtag) for o in orgs])
        for org_id, raw in zip(orgs, raws, strict=True):
            if raw is None:
                continue
            try:
                doc = json.loads(raw)
                url, query = doc["url"], doc["q"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(url, str) and isinstance(query, str):
                return org_id, url, query
        return None
