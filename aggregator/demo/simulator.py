"""A simulated ilos upstream: what `demo`, the tests and the benchmarks talk to.

It follows shared/reference/ilos-upstream.md, unknowns included: search answers
as RSS 2.0 with the observed non-namespaced children (or as Atom), a
`duration` child in one of several formats or none, thumbnail URLs that are
signed, expire, and change on every answer, and the metadata endpoint at both
`/video/metadata` and `/v1/video/metadata` with the documented envelope.

Each `SimOrg` is found by its api_key, as ilos finds an organisation, and has
knobs the tests turn: latency, and faults (timeout, 5xx, 401, 429 with
Retry-After, malformed, truncated and oversized bodies). Every call is written
to `Simulator.log` by org name (never by key) so tests can count them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import random
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

import aiohttp
from aiohttp import web

from aggregator.render.icons import png

APP_HOST = "https://app.ilosvideos.com"
SEARCH_PATHS = ("/opensearch/", "/opensearch")
METADATA_PATHS = ("/video/metadata", "/v1/video/metadata")
FAULTS = ("timeout", "500", "503", "401", "429", "malformed", "truncated", "oversized")


@dataclass
class SimVideo:
    randtag: str
    title: str
    author: str
    published: datetime
    duration_ms: int
    plays: int
    description: str = ""


@dataclass
class SimOrg:
    name: str
    api_key: str
    videos: list[SimVideo]
    feed_format: str = "rss"  # "rss" or "atom"
    duration_child: str | None = None  # None, "clock", "seconds" or "ms"
    latency: float = 0.0  # seconds before a search answer starts
    metadata_latency: float = 0.0
    fault: str | None = None  # one of FAULTS, for search answers
    metadata_fault: str | None = None  # "timeout", "500", "429" or "error" (level: error)
    retry_after: int = 30
    max_results: int | None = None  # None: every match, as ilos may well do
    broken_durations: set[str] = field(default_factory=set)  # answer level: error
    # ilos v2's throttle: at most rate_limit requests (search and metadata) per rolling
    # rate_window seconds per key, 429 with Retry-After past it; None is unlimited.
    rate_limit: int | None = None
    rate_window: float = 60.0
    # Seconds a request takes to reach ilos, drawn from (low, high) for each: the throttle counts
    # it when it arrives, as ilos does, and only then does `latency` begin.
    arrival_delay: tuple[float, float] = (0.0, 0.0)
    _requests: deque[float] = field(default_factory=deque, repr=False)
    arrivals: list[float] = field(default_factory=list, repr=False)  # monotonic, of counted requests


@dataclass(frozen=True, slots=True)
class Call:
    org: str  # the org's name, "?" for an unknown key
    endpoint: str  # "search", "metadata" or "thumbnail"
    arg: str  # the query, or the randtag
    throttled: bool = False  # answered 429 by the per-key rate limit
    at: float = field(default_factory=time.monotonic)  # when it came


class Simulator:
    def __init__(self, orgs: list[SimOrg], *, thumbnail_ttl: int = 3600) -> None:
        self.orgs = orgs
        self.thumbnail_ttl = thumbnail_ttl
        self.log: list[Call] = []
        self.base_url = ""  # set by start()
        self._secret = secrets.token_bytes(16)
        self._answers = 0
        self._runner: web.AppRunner | None = None
        self._png_cache: OrderedDict[str, bytes] = OrderedDict()
        self._remaining = 0
        self._rate_for: dict[int, dict[str, str]] = {}  # by id(request): headers its answer carries
        self.app = web.Application()
        self.app.on_response_prepare.append(self._add_rate_headers)
        for path in SEARCH_PATHS:
            self.app.router.add_get(path, self._search)
        for path in METADATA_PATHS:
            self.app.router.add_post(path, self._metadata)
        self.app.router.add_get("/thumbs/{randtag}.png", self._thumbnail)

    # -- what tests use -------------------------------------------------------

    def matches(self, org: SimOrg, query: str) -> list[SimVideo]:
        """The org's videos that answer `query`, in its order (a subclass may match otherwise)."""
        return search_catalog(org.videos, query)

    async def upload(
        self, org_name: str, video: SimVideo, webhook_url: str | None = None, extras: object = None
    ) -> int | None:
        """Add a video to an org now, as its Recording or Uploading API does; with `webhook_url`
        (the call's `video_endpoint`), then POST ilos's webhook body there. The webhook's status."""
        self.org(org_name).videos.insert(0, video)
        if webhook_url is None:
            return None
        view = f"https://app.ilosvideos.com/view/{video.randtag}"
        embed = f"https://app.ilosvideos.com/embed/{video.randtag}"
        body = {
            "token": secrets.token_hex(16),  # the recording session's token, not an API key
            "randtag": video.randtag,
            "videoURL": view,
            "embedURL": embed,
            "iframe": f"<iframe src='{embed}'></iframe>",
            "video_endpoint_extras": extras,
        }
        async with aiohttp.ClientSession() as session, session.post(webhook_url, json=body) as resp:
            await resp.read()
            return resp.status

    def org(self, name: str) -> SimOrg:
        return next(o for o in self.orgs if o.name == name)

    def calls(self, org: str | None = None, endpoint: str | None = None) -> list[Call]:
        return [
            c
            for c in self.log
            if (org is None or c.org == org) and (endpoint is None or c.endpoint == endpoint)
        ]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # Cancelled handlers and a short shutdown: a "timeout" fault must not
        # keep the simulator alive for its whole sleep after the client gave up.
        self._runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------

    def _by_key(self, key: str | None) -> SimOrg | None:
        return next((o for o in self.orgs if key and hmac.compare_digest(o.api_key, key)), None)

    async def _search(self, request: web.Request) -> web.StreamResponse:
        org = self._by_key(request.query.get("api_key"))
        query = request.query.get("q", "")
        if org is None:
            self.log.append(Call("?", "search", query))
            return web.Response(status=401, text="Invalid API key")
        await _arrive(org)
        throttled = self._throttle(org)
        self.log.append(Call(org.name, "search", query, throttled is not None))
        if throttled is not None:
            return throttled
        self._rate_for[id(request)] = self._rate_headers(org)
        if org.latency:
            await asyncio.sleep(org.latency)
        fault = await self._fault(org.fault, org.retry_after)
        if fault is not None:
            return fault
        matches = self.matches(org, query)
        if org.max_results is not None:
            matches = matches[: org.max_results]
        prefix = "ilos: " if request.query.get("ptilos") in ("true", "1") else ""
        if org.fault == "malformed":
            return web.Response(
                text="<html><body><h1>Whoops, looks like something went wrong.</h1>", content_type="text/html"
            )
        if org.fault == "oversized":
            return await self._stream_oversized(request)
        body = self._render(org, matches, query, prefix)
        if org.fault == "truncated":
            body = body[: len(body) // 2]
        ctype = "application/atom+xml" if org.feed_format == "atom" else "application/rss+xml"
        return web.Response(body=body, content_type=ctype, charset="utf-8")

    async def _metadata(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = dict(await request.post())
        if not isinstance(payload, dict):
            payload = {}
        org = self._by_key(str(payload.get("api_key") or ""))
        randtag = str(payload.get("randtag") or "")
        if org is None:
            self.log.append(Call("?", "metadata", randtag))
            return web.json_response({"message": "Invalid API key", "level": "error", "data": []}, status=401)
        await _arrive(org)
        throttled = self._throttle(org)
        self.log.append(Call(org.name, "metadata", randtag, throttled is not None))
        if throttled is not None:
            return throttled
        self._rate_for[id(request)] = self._rate_headers(org)
        if org.metadata_latency:
            await asyncio.sleep(org.metadata_latency)
        if org.metadata_fault == "error":
            return _metadata_error("Something went wrong")
        fault = await self._fault(org.metadata_fault, org.retry_after)
        if fault is not None:
            return fault
        video = next((v for v in org.videos if v.randtag == randtag), None)
        if video is None or randtag in org.broken_durations:
            return _metadata_error("Video not found")
        total = video.duration_ms
        hours, rest = divmod(total, 3_600_000)
        mins, rest = divmod(rest, 60_000)
        secs, ms = divmod(rest, 1000)
        return web.json_response(
            {
                "message": "",
                "level": "success",
                "data": {
                    "hours": f"{hours:02d}",
                    "mins": f"{mins:02d}",
                    "secs": f"{secs:02d}",
                    "ms": f"{ms:03d}",
                    "totalMs": total,
                },
            }
        )

    async def _thumbnail(self, request: web.Request) -> web.Response:
        randtag = request.match_info["randtag"]
        self.log.append(Call("-", "thumbnail", randtag))
        try:
            expires = int(request.query.get("Expires", ""))
        except ValueError:
            return web.Response(status=403, text="Missing Expires")
        nonce = request.query.get("Key-Pair-Id", "")
        if not hmac.compare_digest(request.query.get("Signature", ""), self._sign(randtag, expires, nonce)):
            return web.Response(status=403, text="Invalid signature")
        if expires < time.time():
            return web.Response(status=403, text="Request has expired")
        return web.Response(
            body=self._png(randtag), content_type="image/png", headers={"Cache-Control": "max-age=3600"}
        )

    def throttled(self) -> list[Call]:
        """Every request the per-key rate limit refused."""
        return [c for c in self.log if c.throttled]

    def _rate_headers(self, org: SimOrg) -> dict[str, str]:
        """What ilos v2 tells a throttled key on every answer: its limit and what is left of it."""
        if org.rate_limit is None:
            return {}
        return {"X-RateLimit-Limit": str(org.rate_limit), "X-RateLimit-Remaining": str(self._remaining)}

    async def _add_rate_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self._rate_for.pop(id(request), {}))

    def _throttle(self, org: SimOrg) -> web.Response | None:
        """A 429 when this key's rolling window is full; None (and the request counted) otherwise."""
        if org.rate_limit is None:
            return None
        now = time.monotonic()
        window = org._requests
        while window and window[0] <= now - org.rate_window:
            window.popleft()
        if len(window) >= org.rate_limit:
            retry_after = max(1, math.ceil(window[0] + org.rate_window - now))
            return web.Response(
                status=429,
                text="Too Many Attempts.",
                headers={
                    "Retry-After": str(retry_after),
                    "X-RateLimit-Limit": str(org.rate_limit),
                    "X-RateLimit-Remaining": "0",
                },
            )
        window.append(now)
        org.arrivals.append(now)
        self._remaining = org.rate_limit - len(window)
        return None

    async def _fault(self, fault: str | None, retry_after: int) -> web.Response | None:
        if fault == "timeout":
            await asyncio.sleep(120)
        if fault in ("500", "503"):
            return web.Response(status=int(fault), text="Server Error")
        if fault == "401":
            return web.Response(status=401, text="Unauthorized")
        if fault == "429":
            return web.Response(
                status=429,
                text="Too Many Attempts.",
                headers={
                    "Retry-After": str(retry_after),
                    "X-RateLimit-Limit": "60",
                    "X-RateLimit-Remaining": "0",
                },
            )
        return None

    async def _stream_oversized(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await resp.prepare(request)
        await resp.write(b'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><!--')
        chunk = b"x" * 65536
        try:
            for _ in range(16 * 16):  # 16 MiB, well past any sane cap
                await resp.write(chunk)
            await resp.write(b"--></channel></rss>")
        except (ConnectionResetError, RuntimeError):
            pass  # the client stopped reading, as it should
        return resp

    # -- bodies ---------------------------------------------------------------

    def _sign(self, randtag: str, expires: int, nonce: str) -> str:
        msg = f"{randtag}:{expires}:{nonce}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def _thumb_url(self, randtag: str) -> str:
        # Like CloudFront: a new signature on every answer, valid for a while.
        self._answers += 1
        expires = int(time.time()) + self.thumbnail_ttl
        nonce = f"SIM{self._answers:08d}"
        sig = self._sign(randtag, expires, nonce)
        return f"{self.base_url}/thumbs/{randtag}.png?Expires={expires}&Signature={sig}&Key-Pair-Id={nonce}"

    def _render(self, org: SimOrg, videos: list[SimVideo], query: str, prefix: str) -> bytes:
        if org.feed_format == "atom":
            return self._render_atom(org, videos, query, prefix)
        items = []
        for n, v in enumerate(videos):
            thumb = self._thumb_url(v.randtag)
            duration = _duration_child(v.duration_ms, org.duration_child)
            items.append(
                "<item>\n"
                f"  <video_id>{200000 + n}</video_id>\n"
                f"  <randtag>{v.randtag}</randtag>\n"
                f"  <title>{escape(prefix + v.title)}</title>\n"
                f"  <link>{APP_HOST}/view/{v.randtag}</link>\n"
                f"  <embedLink>{APP_HOST}/embed/{v.randtag}</embedLink>\n"
                f'  <description><![CDATA[<img src="{thumb}"><br>{v.description}]]></description>\n'
                f"  <pubDate>{v.published.strftime('%a, %d %b %Y %H:%M:%S')} Z</pubDate>\n"
                f"  <author>{escape(v.author)}</author>\n"
                f"  <plays>{v.plays}</plays>\n"
                + (f"  <duration>{duration}</duration>\n" if duration else "")
                + f"  <pubDateDiffForHuman>some time ago</pubDateDiffForHuman>\n"
                f'  <media:thumbnail height="102" width="180" url={quoteattr(thumb)}/>\n'
                f'  <media:content height="102" width="180" medium="image" type="image/jpeg" url={quoteattr(thumb)}/>\n'
                "</item>"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">\n<channel>\n'
            f"<title>ilos search: {escape(query)}</title>\n<link>{APP_HOST}</link>\n"
            f"<description>Search results for {escape(query)}</description>\n"
            + "\n".join(items)
            + "\n</channel>\n</rss>\n"
        ).encode()

    def _render_atom(self, org: SimOrg, videos: list[SimVideo], query: str, prefix: str) -> bytes:
        entries = []
        for v in videos:
            thumb = self._thumb_url(v.randtag)
            duration = _duration_child(v.duration_ms, org.duration_child)
            stamp = v.published.strftime("%Y-%m-%dT%H:%M:%SZ")
            entries.append(
                "<entry>\n"
                f"  <id>tag:ilosvideos.com,2017:video/{v.randtag}</id>\n"
                f"  <title>{escape(prefix + v.title)}</title>\n"
                f'  <link rel="alternate" type="text/html" href="{APP_HOST}/view/{v.randtag}?sr=atom"/>\n'
                f"  <published>{stamp}</published>\n  <updated>{stamp}</updated>\n"
                f"  <author><name>{escape(v.author)}</name></author>\n"
                f'  <summary type="html">{escape(v.description)}</summary>\n'
                + (f"  <duration>{duration}</duration>\n" if duration else "")
                + f'  <media:thumbnail url={quoteattr(thumb)} width="180" height="102"/>\n'
                "</entry>"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/">\n'
            f"<id>tag:ilosvideos.com,2017:search</id>\n<title>ilos search: {escape(query)}</title>\n"
            "<updated>2024-01-01T00:00:00Z</updated>\n" + "\n".join(entries) + "\n</feed>\n"
        ).encode()

    def _png(self, randtag: str) -> bytes:
        if randtag not in self._png_cache:
            digest = hashlib.sha256(randtag.encode()).digest()
            self._png_cache[randtag] = solid_png(
                160, 90, digest[0] // 2 + 40, digest[1] // 2 + 40, digest[2] // 2 + 60
            )
            while len(self._png_cache) > 2000:
                self._png_cache.popitem(last=False)
        return self._png_cache[randtag]


def search_catalog(videos: list[SimVideo], query: str) -> list[SimVideo]:
    """Every video whose title, description or author holds all the terms; `!` is everything.

    Title matches first, then newest first: a plausible relevance order that
    differs between organisations, which is what the merge must cope with.
    """
    terms = query.lower().split()
    if query.strip() == "!":
        terms = []
    matches = [v for v in videos if all(t in f"{v.title} {v.description} {v.author}".lower() for t in terms)]
    return sorted(
        matches,
        key=lambda v: (not all(t in v.title.lower() for t in terms), -v.published.timestamp(), v.randtag),
    )


def _duration_child(duration_ms: int, style: str | None) -> str | None:
    if style == "clock":
        s = duration_ms // 1000
        return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    if style == "seconds":
        return str(round(duration_ms / 1000))
    if style == "ms":
        return str(duration_ms)
    return None


def _metadata_error(message: str) -> web.Response:
    return web.json_response({"message": message, "level": "error", "data": []})


def solid_png(width: int, height: int, r: int, g: int, b: int) -> bytes:
    return png(width, height, lambda _x, _y: (r, g, b, 255))


async def _arrive(org: SimOrg) -> None:
    """The request's trip to ilos, before ilos counts it."""
    if org.arrival_delay[1] > 0:
        await asyncio.sleep(random.uniform(*org.arrival_delay))
