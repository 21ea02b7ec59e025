"""A rendered page as it is kept and served: both codings, their validators, its Server-Timing.

Validators follow RFC 9110: a strong ETag from the body's hash, one per content
coding (`"…-gzip"` for the gzip body, section 8.8.3), and `Last-Modified` from
when that representation first appeared (`first_seen`, shared through the cache
by every replica). Answering with them (200 or 304) is `web.httpcache`'s job.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from multidict import CIMultiDictProxy

from aggregator.model import OrgReport, OrgStatus
from aggregator.store.cache import Cache

DEGRADED_MAX_AGE = 10  # seconds a page missing an org's answer may be reused
MIN_GZIP = 512


@dataclass(frozen=True, slots=True)
class CachedPage:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str  # of the identity body
    gzip_etag: str  # of the gzip body: each content coding has its own strong validator (RFC 9110 8.8.3)
    last_modified: str
    last_modified_ts: float  # when this representation first appeared with its current ETag
    expires_at: float  # epoch seconds
    server_timing: str  # for the request that rendered it
    hit_timing: str = ""  # for every later request it serves: each org's answer "cached"
    # What a public reuse answers with (`web.httpcache.reuse_headers`), by (gzip body, 200 rather
    # than 304), and the span of time whose max-age they say: made once a second, kept here to go
    # with the page. Empty (a dict CPython does not track) until the page is reused: most pages never
    # are, and a full collection walks every multidict kept.
    reuse_answers: dict[tuple[bool, bool], tuple[float, float, CIMultiDictProxy[str]]] = field(
        default_factory=dict
    )
    thumbnail: str | None = None  # the first result's thumbnail, as this page links it (oEmbed's)

    @property
    def nbytes(self) -> int:
        """What keeping this page costs: both bodies, the headers and some overhead."""
        return len(self.body) + len(self.gzipped or b"") + 1024

    def max_age(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


async def first_seen(cache: Cache, record: str) -> tuple[str | None, float | None]:
    """(ETag, epoch seconds) a page was first served with, from the shared cache; Nones if unknown."""
    raw = await cache.get(record)
    if raw is None:
        return None, None
    try:
        doc = json.loads(raw)
        return str(doc["etag"]), float(doc["at"])
    except (ValueError, KeyError, TypeError):
        return None, None


async def remember(cache: Cache, record: str, etag: str, at: float, ttl: float) -> None:
    """Remember when the page first appeared with `etag`, for `ttl` seconds after it last changed.

    The record tells a caller when someone in its scope first fetched that page, so it is kept
    no longer than the answers behind the page can be served (`cache.stale_ttl`)."""
    await cache.set(record, json.dumps({"etag": etag, "at": at}).encode(), ttl)


def body_etag(body: bytes) -> str:
    """The strong ETag of an identity body: a digest of its bytes."""
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def build_page(
    body: bytes,
    content_type: str,
    first_seen: float,
    fresh_until: float,
    reports: Sequence[OrgReport],
    complete: bool,
    now: float,
    pending: int = 0,
    thumbnail: str | None = None,
) -> CachedPage:
    """`first_seen`: when this body (this ETag) was first served, which `Last-Modified` says.

    `pending`: videos whose duration is still being looked up (Server-Timing `durations`);
    `thumbnail`: the first result's, as the page links it.
    """
    expires_at = fresh_until if complete else min(fresh_until or now, now + DEGRADED_MAX_AGE)
    timing = ", ".join(f'org-{r.org_id};dur={r.elapsed_ms:.1f};desc="{r.status}"' for r in reports)
    timing_hit = ", ".join(
        f'org-{r.org_id};dur=0;desc="{OrgStatus.CACHED if r.status.good else r.status}"' for r in reports
    )
    durations = f'durations;desc="pending {pending}"' if pending else 'durations;desc="complete"'
    timing = f"{timing}, {durations}" if timing else durations
    timing_hit = f"{timing_hit}, {durations}" if timing_hit else durations
    etag = body_etag(body)
    gzip_etag = etag[:-1] + '-gzip"'
    last_modified = format_datetime(datetime.fromtimestamp(int(first_seen), UTC), usegmt=True)
    return CachedPage(
        body=body,
        gzipped=gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP else None,
        content_type=content_type,
        etag=etag,
        gzip_etag=gzip_etag,
        last_modified=last_modified,
        last_modified_ts=float(int(first_seen)),
        expires_at=max(now, expires_at),
        server_timing=timing,
        hit_timing=timing_hit,
        thumbnail=thumbnail,
    )
