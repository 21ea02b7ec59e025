"""WebSub (W3C Recommendation, 2018) for the feed readers that support it.

With `[server] websub_hub` set, open feeds (no `[[clients]]`, so no caller's
token in any URL) name the hub (`<link rel="hub">` in Atom, `atom:link
rel="hub"` in RSS, `hubs` in JSON Feed) beside their `rel="self"`, the topic
URL. When the refresher finds a subscribed feed changed, the hub gets a
publish ping (`hub.mode=publish`, `hub.url=<topic>`: the form most hubs
accept, WebSub 1.0 leaves its shape to the hub) and fetches the feed itself.

A feed fetched with a `key=` never carries a hub link and is never announced:
the hub is a third party, and the topic URL would hand it the token.
"""

from __future__ import annotations

import logging

import aiohttp

from aggregator.caller import Caller
from aggregator.freshness.subscriptions import Subscription
from aggregator.metrics import Metrics
from aggregator.pages.service import Pages, page_key
from aggregator.params import ParamError, params_of_url
from aggregator.render.formats import BY_NAME
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache

log = logging.getLogger(__name__)
PING_TIMEOUT = aiohttp.ClientTimeout(total=10)
REFRESHER_ID = "refresher"  # who asked, for the suggestions' count of callers


class Announcer:
    """After a refresh: render an open subscribed feed again (so its next poll is a page-cache
    hit) and, with a WebSub hub, announce it if it changed."""

    def __init__(
        self,
        hub: str | None,
        session: aiohttp.ClientSession,
        cache: Cache,
        pages: Pages,
        anyone: Caller,
        metrics: Metrics,
        record_ttl: float = 30 * 86_400.0,
    ) -> None:
        """`record_ttl`: how long the ETag last announced is kept (`subscription_idle`: no longer
        than the subscription it is for)."""
        self.hub = hub
        self._record_ttl = record_ttl
        self._session = session
        self._cache = cache
        self._pages = pages
        self._anyone = anyone  # open feeds only: a keyed feed is never announced
        self._metrics = metrics

    async def refreshed(self, sub: Subscription) -> None:
        fmt = BY_NAME.get(sub.fmt)
        if self.hub is None or not sub.open or fmt is None or fmt.render is None:
            return
        try:
            params = params_of_url(sub.url, self._anyone.visible_orgs)
        except ParamError:
            return
        key = page_key(fmt, "", self._anyone, params)
        served_before = await self._pages.served_etag(key)
        page = await self._pages.render(key, fmt, "", self._anyone, params, REFRESHER_ID)
        outcome = await announce_if_changed(
            self._session, self._cache, self.hub, sub.id, sub.url, page.etag, served_before, self._record_ttl
        )
        if outcome is not None:
            self._metrics.websub_pings.labels(outcome).inc()


async def announce_if_changed(
    session: aiohttp.ClientSession,
    cache: Cache,
    hub: str,
    sub_id: str,
    topic: str,
    etag: str,
    served_before: str | None,
    record_ttl: float,
) -> str | None:
    """Ping the hub if the feed's ETag differs from the last one announced; the ping's outcome, or None.

    Before a first announcement the baseline is `served_before`, the ETag the
    feed was served with before this render: subscribers fetched that one.
    """
    record = cache_keys.key("websub", sub_id)
    announced = await cache.get(record)
    baseline = announced.decode() if announced is not None else served_before
    if baseline == etag:
        return None
    await cache.set(record, etag.encode(), record_ttl)
    if baseline is None:
        return None
    return await publish(session, hub, topic)


async def publish(session: aiohttp.ClientSession, hub: str, topic: str) -> str:
    """POST a publish ping; "ok" for a 2xx, else what went wrong (logged without the body)."""
    try:
        async with session.post(
            hub, data={"hub.mode": "publish", "hub.url": topic}, timeout=PING_TIMEOUT, allow_redirects=False
        ) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return "ok"
            log.warning("websub: the hub answered a publish ping with HTTP %d", resp.status)
            return "refused"
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("websub: publish ping failed (%s)", type(exc).__name__)
        return "error"
