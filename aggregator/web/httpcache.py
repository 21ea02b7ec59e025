"""Answering with a rendered page: identity or gzip, 200 or 304 (RFC 9110).

A page is rendered and compressed once (`pages`), then kept in-process until the
first of its org answers goes stale, so a feed reader's repeated poll costs a dict
lookup and this. `If-None-Match` wins over `If-Modified-Since` (section 13.2.2); a
304 repeats the validators and `Cache-Control` (section 15.4.5).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from aggregator.pages.cached_page import MIN_GZIP, CachedPage, body_etag


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
    gzipped, modified = representation(request.headers, page)
    etag = page.gzip_etag if gzipped else page.etag
    if hit and not private:
        # The headers every public reuse repeats, made once a second and copied into the response.
        template = reuse_headers(page, gzipped, modified, now)
        if modified:
            response = web.Response(body=page.gzipped if gzipped else page.body, headers=template)
        else:
            response = web.Response(status=304, headers=template)
        if extra:
            response.headers.update(extra)
        return response
    headers = {
        "Last-Modified": page.last_modified,
        "Cache-Control": f"{'private' if private else 'public'}, max-age={page.max_age(now)}",
        "Vary": "Accept-Encoding, Authorization" if private else "Accept-Encoding",
        "Server-Timing": page.hit_timing if hit else page.server_timing,
        "ETag": etag,
    }
    if extra:
        headers.update(extra)
    if not modified:
        return web.Response(status=304, headers=headers)
    return _with_body(headers, page.content_type, page.gzipped if gzipped else None, page.body)


def representation(request_headers: Mapping[str, str], page: CachedPage) -> tuple[bool, bool]:
    """(gzip body, modified): the coding is chosen first, then the request's validators are
    compared with that representation's; `If-None-Match` wins over `If-Modified-Since` (RFC 9110 13.2.2).

    Names are aiohttp's `hdrs` constants: a lookup by a plain str folds its case on every call."""
    gzipped = _gzip_wanted(request_headers, page.gzipped)
    etag = page.gzip_etag if gzipped else page.etag
    if_none_match = request_headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        return gzipped, if_none_match != etag and not _matches(if_none_match, etag)
    since = request_headers.get(hdrs.IF_MODIFIED_SINCE)
    return gzipped, since is None or not _not_modified_since(since, page)


def reuse_headers(page: CachedPage, gzipped: bool, modified: bool, now: float) -> CIMultiDictProxy[str]:
    """A public reuse's headers: the page's own and Cache-Control, whose max-age counts down a
    second at a time. Made once a second and kept with the page; `web.Response` copies them."""
    made = page.reuse_answers.get((gzipped, modified))
    if made is not None and made[0] < now <= made[1]:
        return made[2]
    max_age = page.max_age(now)
    headers = CIMultiDict(
        {
            "Last-Modified": page.last_modified,
            "Vary": "Accept-Encoding",
            "Server-Timing": page.hit_timing,
            "ETag": page.gzip_etag if gzipped else page.etag,
        }
    )
    if modified:  # a 304 repeats the validators and what varies, not the body's type (RFC 9110 15.4.5)
        headers["Content-Type"] = page.content_type
        if gzipped:
            headers["Content-Encoding"] = "gzip"
    headers["Cache-Control"] = f"public, max-age={max_age}"
    proxy = CIMultiDictProxy(headers)
    # int(expires_at - now) is max_age for now in (expires_at - max_age - 1, expires_at - max_age]
    page.reuse_answers[gzipped, modified] = (page.expires_at - max_age - 1, page.expires_at - max_age, proxy)
    return proxy


def _with_body(
    headers: MutableMapping[str, str], content_type: str, gzipped: bytes | None, body: bytes
) -> web.Response:
    """A 200: the gzip body when one is to be sent (`gzipped`), else the identity one."""
    headers["Content-Type"] = content_type
    if gzipped is not None:
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=gzipped, headers=headers)
    return web.Response(body=body, headers=headers)


def _gzip_wanted(request_headers: Mapping[str, str], gzipped: bytes | None) -> bool:
    """Whether to answer with the gzip body: there is one, and the client accepts gzip."""
    accept_encoding = request_headers.get(hdrs.ACCEPT_ENCODING)
    return gzipped is not None and accept_encoding is not None and accepts_gzip(accept_encoding)


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): `W/` prefixes do not matter."""
    if if_none_match.strip() == "*":
        return True
    return etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}


def _not_modified_since(since: str, page: CachedPage) -> bool:
    """Only when this representation has not changed since then (it appeared no later).

    Every HTTP-date is GMT, including the asctime form (`Sun Nov  6 08:49:37 1994`), which
    RFC 9110 (5.6.7) requires a recipient to accept and which carries no zone of its own.
    """
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return page.last_modified_ts <= when.timestamp()


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


@dataclass(frozen=True, slots=True)
class Resource:
    """A body that does not depend on a search (the description, the stylesheet, an icon) or one
    made per request (suggestions), ready to answer: both codings and a strong ETag for each."""

    body: bytes
    content_type: str
    cache_control: str
    etag: str
    gzipped: bytes | None = None
    gzip_etag: str = ""

    @classmethod
    def of(cls, body: bytes, content_type: str, cache_control: str, compress: bool = True) -> Resource:
        etag = body_etag(body)
        gzipped = gzip.compress(body, 6, mtime=0) if compress and len(body) >= MIN_GZIP else None
        return cls(body, content_type, cache_control, etag, gzipped, etag[:-1] + '-gzip"')


def respond_resource(
    request: web.Request, resource: Resource, extra: dict[str, str] | None = None
) -> web.Response:
    """200 or 304 (If-None-Match, weak comparison as RFC 9110 13.1.2 says), gzip where accepted."""
    gzipped = _gzip_wanted(request.headers, resource.gzipped)
    etag = resource.gzip_etag if gzipped else resource.etag
    headers = {"ETag": etag, "Cache-Control": resource.cache_control, **(extra or {})}
    if resource.gzipped is not None:
        headers["Vary"] = f"{headers['Vary']}, Accept-Encoding" if "Vary" in headers else "Accept-Encoding"
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    return _with_body(headers, resource.content_type, resource.gzipped if gzipped else None, resource.body)
