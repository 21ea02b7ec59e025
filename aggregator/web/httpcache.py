"""HTTP caching for rendered feeds: validators, 304s, compression, and the page cache's entries.

A page is rendered and compressed once, then kept in-process until the first
of its org answers goes stale, so a feed reader's repeated poll costs a dict
lookup. Validators follow RFC 9110: a strong ETag from the body's hash, one per
content coding (`"…-gzip"` for the gzip body), and `Last-Modified` from when
that representation first appeared (`pages.first_seen`, shared through the
cache by every replica); `If-None-Match` wins over
`If-Modified-Since` (section 13.2.2); a 304 repeats the validators and
`Cache-Control` (RFC 9110 15.4.5).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from aiohttp import web

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
    # Built once: what every later request it serves repeats (its Server-Timing says "cached").
    hit_headers: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """What keeping this page costs: both bodies, the headers and some overhead."""
        return len(self.body) + len(self.gzipped or b"") + 1024

    def max_age(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


FIRST_SEEN_TTL = 30 * 86_400  # a page's first appearance is remembered this long after it last changed


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


async def remember(cache: Cache, record: str, etag: str, at: float) -> None:
    await cache.set(record, json.dumps({"etag": etag, "at": at}).encode(), FIRST_SEEN_TTL)


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
) -> CachedPage:
    """`first_seen`: when this body (this ETag) was first served, which `Last-Modified` says.

    `pending`: videos whose duration is still being looked up (Server-Timing `durations`).
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
    last_modified = format_datetime(datetime.fromtimestamp(int(first_seen), UTC), usegmt=True)
    return CachedPage(
        body=body,
        gzipped=gzip.compress(body, 6, mtime=0) if len(body) >= MIN_GZIP else None,
        content_type=content_type,
        etag=etag,
        gzip_etag=etag[:-1] + '-gzip"',
        last_modified=last_modified,
        last_modified_ts=float(int(first_seen)),
        expires_at=max(now, expires_at),
        server_timing=timing,
        hit_headers={
            "Last-Modified": last_modified,
            "Vary": "Accept-Encoding",
            "Server-Timing": timing_hit,
        },
    )


def respond(
    request: web.Request,
    page: CachedPage,
    *,
    private: bool,
    hit: bool,
    now: float,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """The page, or a 304 repeating its validators and Cache-Control. Kept lean: it is the warm path.

    The representation is chosen first (gzip or identity), then compared with the
    request's validators: `If-None-Match` wins over `If-Modified-Since` (RFC 9110 13.2.2).
    """
    req_headers = request.headers
    accept_encoding = req_headers.get("Accept-Encoding")
    gzipped = page.gzipped is not None and accept_encoding is not None and accepts_gzip(accept_encoding)
    etag = page.gzip_etag if gzipped else page.etag
    if hit and not private:
        headers = page.hit_headers.copy()
        headers["Cache-Control"] = f"public, max-age={page.max_age(now)}"
    else:
        headers = {
            "Last-Modified": page.last_modified,
            "Cache-Control": f"{'private' if private else 'public'}, max-age={page.max_age(now)}",
            "Vary": "Accept-Encoding, Authorization" if private else "Accept-Encoding",
            "Server-Timing": page.hit_headers["Server-Timing"] if hit else page.server_timing,
        }
    headers["ETag"] = etag
    if extra:
        headers.update(extra)
    if_none_match = req_headers.get("If-None-Match")
    if if_none_match is not None:
        if if_none_match == etag or _matches(if_none_match, etag):
            return web.Response(status=304, headers=headers)
    elif "If-Modified-Since" in req_headers and _not_modified_since(req_headers["If-Modified-Since"], page):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = page.content_type
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=page.gzipped, headers=headers)
    return web.Response(body=page.body, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): `W/` prefixes do not matter."""
    if if_none_match.strip() == "*":
        return True
    return etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}


def _not_modified_since(since: str, page: CachedPage) -> bool:
    """Only when this representation has not changed since then (it appeared no later)."""
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    return when.tzinfo is not None and page.last_modified_ts <= when.timestamp()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether gzip is acceptable (RFC 9110 12.5.3): its own q-value, else that of `*`; q=0 means no.

    `x-gzip` is gzip's old alias. A malformed q-value makes that coding unacceptable.
    """
    gzip_q: float | None = None
    star_q: float | None = None
    for part in accept_encoding.lower().split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                q = _qvalue(value.strip())
        if name in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif name == "*":
            star_q = q
    effective = gzip_q if gzip_q is not None else star_q
    return effective is not None and effective > 0


def _qvalue(text: str) -> float:
    """RFC 9110 12.4.2: 0 to 1 with at most three decimals; anything else counts as 0."""
    if not text or len(text) > 5 or not all(c.isdigit() or c == "." for c in text) or text.count(".") > 1:
        return 0.0
    value = float(text)
    return value if 0.0 <= value <= 1.0 else 0.0
