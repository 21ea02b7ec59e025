"""Polled feeds kept fresh, upload webhooks, WebSub: over loopback, with a real Redis and a moved clock.

The refresher's background pass is off in these apps (`refresh_every=None`);
each test runs a pass itself (`app[SERVICES].refresher.run_once()`) after moving the
clock, so nothing waits for a timer and nothing depends on wall time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from aiohttp import web

from aggregator.config import ConfigError, parse_config_text
from aggregator.demo.simulator import SimVideo
from aggregator.web.accesslog import redact
from aggregator.web.app import create_app
from aggregator.web.state import SERVICES
from tests.conftest import make_config
from tests.helpers import NS, atom, entry_ids, link

SECRET = "hook-secret-engineering-0123456789"
TTL = 300


def config(sim, redis_url: str | None = None, **kw):
    cache = {"search_ttl": TTL, **({"redis_url": redis_url} if redis_url else {}), **kw.pop("cache", {})}
    return make_config(sim, cache=cache, **kw)


def with_webhook(sim, redis_url: str, **kw):
    cfg = config(sim, redis_url, **kw)
    orgs = tuple(
        o if o.id != "engineering" else type(o)(o.id, o.name, o.api_key, o.base_url, o.rate_limit, SECRET)
        for o in cfg.orgs
    )
    return type(cfg)(
        cfg.server, cfg.cache, cfg.upstream, orgs, cfg.clients, cfg.web, cfg.description, cfg.suggest
    )


async def start(aiohttp_client, cfg, clock):
    """The app with no background refresher (the test runs its passes), and a client of it."""
    app = create_app(cfg, clock=clock, refresh_every=None)
    return app, await aiohttp_client(app)


async def subscribe(client, url: str) -> None:
    """A feed reader's first two polls: a URL fetched again within a day is a subscription."""
    for _ in range(2):
        resp = await client.get(url)
        assert resp.status == 200
        await resp.read()


def searches(sim, org: str) -> int:
    return len(sim.calls(org, "search"))


def new_video(randtag: str, title: str) -> SimVideo:
    return SimVideo(randtag, title, "Ada Lovelace", datetime.now(UTC), 754_000, 0)


async def test_a_feed_fetched_once_is_not_a_subscription(aiohttp_client, sim, clock, redis_clean) -> None:
    app, client = await start(aiohttp_client, config(sim, redis_clean), clock)
    resp = await client.get("/search.atom?q=lecture")
    await resp.read()
    await client.get("/?q=lecture")  # the page is not a feed: not counted
    before = searches(sim, "engineering")
    clock.advance(TTL - 1)
    assert await app[SERVICES].refresher.run_once() == 0
    assert searches(sim, "engineering") == before


async def test_an_idle_subscription_is_forgotten(aiohttp_client, sim, clock, redis_clean) -> None:
    app = create_app(
        config(sim, redis_clean, cache={"subscription_idle": 600}), clock=clock, refresh_every=None
    )
    client = await aiohttp_client(app)
    await subscribe(client, "/search.rss?q=lecture")
    await app[SERVICES].refresher.run_once()
    clock.advance(601)  # not polled for subscription_idle
    before = searches(sim, "engineering")
    assert await app[SERVICES].refresher.run_once() == 0
    assert searches(sim, "engineering") == before


async def test_the_upload_webhook_refuses_what_is_not_ilos(
    aiohttp_client, sim, clock, redis_clean, caplog
) -> None:
    _, client = await start(aiohttp_client, with_webhook(sim, redis_clean), clock)
    body = {"randtag": "AbCdEf123456", "token": "x"}
    assert (await client.post("/hooks/ilos/engineering/wrong-secret-000000000", json=body)).status == 404
    assert (await client.post(f"/hooks/ilos/medicine/{SECRET}", json=body)).status == 404  # no hook there
    assert (await client.post(f"/hooks/ilos/nobody/{SECRET}", json=body)).status == 404
    big = {"randtag": "AbCdEf123456", "video_endpoint_extras": "x" * 17_000}
    assert (await client.post(f"/hooks/ilos/engineering/{SECRET}", json=big)).status == 413
    for bad in (b"{not json", b"[" * 7_000 + b"]" * 7_000, b'{"randtag": "../../etc"}', b'"text"'):
        resp = await client.post(f"/hooks/ilos/engineering/{SECRET}", data=bad)
        assert resp.status == 400, bad[:20]
    assert (await client.get(f"/hooks/ilos/engineering/{SECRET}")).status == 405
    assert SECRET not in caplog.text


async def test_an_upload_shows_in_a_subscribed_feed_with_its_duration(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    app, client = await start(aiohttp_client, with_webhook(sim, redis_clean), clock)
    url = "/search.atom?q=statics&org=engineering&sort=date"
    await subscribe(client, url)
    await app[SERVICES].refresher.run_once()

    hook = str(client.make_url(f"/hooks/ilos/engineering/{SECRET}"))
    video = new_video("NeWvId000001", "Statics lecture 9: trusses, new")
    assert await sim.upload("engineering", video, hook) == 202
    assert await sim.upload("engineering", video, hook) == 202  # ilos retries: a replay is harmless
    clock.advance(5)  # seconds, not search_ttl
    assert await app[SERVICES].refresher.run_once() == 1

    doc = atom(await (await client.get(url)).read())
    ids = entry_ids(doc)
    assert ids.count("urn:ilos:video:NeWvId000001") == 1, ids
    entry = next(e for e in doc.findall("a:entry", NS) if "NeWvId000001" in e.findtext("a:id", namespaces=NS))
    content = entry.find("media:content", NS)
    assert content is not None and content.get("duration") == "754"  # looked up on the webhook


class Hub:
    """A WebSub hub on loopback that records publish pings."""

    def __init__(self) -> None:
        self.pings: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/", self.publish)

    async def publish(self, request: web.Request) -> web.Response:
        self.pings.append(dict(await request.post()))
        return web.Response(status=204)


@pytest.fixture
async def hub(aiohttp_server):
    hub = Hub()
    server = await aiohttp_server(hub.app)
    hub.url = str(server.make_url("/"))
    return hub


async def test_open_feeds_name_the_hub_and_a_change_is_announced(
    aiohttp_client, sim, clock, redis_clean, hub
) -> None:
    cfg = with_webhook(sim, redis_clean, server={"websub_hub": hub.url})
    app, client = await start(aiohttp_client, cfg, clock)
    url = "/search.atom?q=statics&org=engineering&sort=date"
    doc = atom(await (await client.get(url)).read())
    assert link(doc, "hub") == hub.url
    topic = link(doc, "self")
    rss = await (await client.get("/search.rss?q=statics")).text()
    assert f'rel="hub" href="{hub.url}"' in rss or f'href="{hub.url}" rel="hub"' in rss
    jf = json.loads(await (await client.get("/search.json?q=statics")).read())
    assert jf["hubs"] == [{"type": "WebSub", "url": hub.url}]

    await subscribe(client, url)
    await app[SERVICES].refresher.run_once()
    assert hub.pings == []  # nothing changed yet

    hook = str(client.make_url(f"/hooks/ilos/engineering/{SECRET}"))
    assert (
        await sim.upload("engineering", new_video("NeWvId000002", "Statics lecture 10: beams"), hook) == 202
    )
    assert await app[SERVICES].refresher.run_once() == 1
    assert hub.pings == [{"hub.mode": "publish", "hub.url": topic}]
    assert await app[SERVICES].refresher.run_once() == 0
    assert len(hub.pings) == 1  # announced once per change


async def test_no_hub_link_beside_a_token(aiohttp_client, sim, clock, redis_clean, hub) -> None:
    token = "client-token-abcdefghijklmnop"
    extra = f'[[clients]]\nname = "reader"\ntoken = "{token}"\n'
    cfg = make_config(
        sim,
        server={"websub_hub": hub.url, "signing_secret": "signing-secret-0123456789"},
        cache={"redis_url": redis_clean},
        extra=extra,
    )
    client = await aiohttp_client(create_app(cfg, clock=clock, refresh_every=None))
    body = await (await client.get(f"/search.atom?q=statics&key={token}")).read()
    assert link(atom(body), "hub") is None
    assert hub.url.encode() not in body


def test_the_webhook_secret_never_reaches_the_access_log() -> None:
    assert redact(f"/hooks/ilos/engineering/{SECRET}") == "/hooks/ilos/engineering/REDACTED"
    assert (
        redact(f"/hooks/ilos/engineering/{SECRET}?key=abc") == "/hooks/ilos/engineering/REDACTED?key=REDACTED"
    )


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[upstream]\nrefresh_share = 1.5\n", "upstream.refresh_share"),
        ("[cache]\nsubscription_idle = 5\n", "cache.subscription_idle"),
        ('[server]\nwebsub_hub = "ftp://hub"\n', "server.websub_hub"),
    ],
)
def test_bad_refresh_settings_are_config_errors(table: str, problem: str) -> None:
    text = f'{table}\n[[orgs]]\nid = "a"\napi_key = "k"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, environ={})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_webhook_secret_must_be_long_and_url_safe() -> None:
    text = '[[orgs]]\nid = "a"\napi_key = "k"\nwebhook_secret = "short/one"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, environ={})
    assert "orgs[0].webhook_secret" in str(caught.value)
    ok = parse_config_text(
        '[[orgs]]\nid = "a"\napi_key = "k"\nwebhook_secret = "env:HOOK"\n', environ={"HOOK": SECRET}
    )
    assert ok.orgs[0].webhook_secret == SECRET and SECRET not in repr(ok)


async def test_subscriptions_are_bounded_per_caller(aiohttp_client, sim, clock, monkeypatch) -> None:
    """A caller polling ever more feed URLs gets at most its share kept fresh (here 2); another
    caller's subscriptions are not held back by it."""
    from aggregator.freshness import subscriptions

    monkeypatch.setattr(subscriptions, "MAX_PER_CALLER", 2)
    cfg = config(sim, server={"trusted_proxies": ["127.0.0.1"]})
    app, client = await start(aiohttp_client, cfg, clock)

    async def poll_twice(query: str, address: str) -> None:
        for _ in range(2):
            resp = await client.get(f"/search.atom?q={query}", headers={"X-Forwarded-For": address})
            assert resp.status == 200
            await resp.read()

    for query in ("lecture", "onboarding", "safety"):
        await poll_twice(query, "198.51.100.7")
    await app[SERVICES].subscriptions.flush()
    assert await app[SERVICES].subscriptions.count() == 2
    await poll_twice("payroll", "198.51.100.8")
    await app[SERVICES].subscriptions.flush()
    assert await app[SERVICES].subscriptions.count() == 3


@pytest.mark.parametrize(("backend", "new"), [("memory", 1_000), ("redis", 200)])
async def test_thousands_of_readers_subscribing_at_once_are_counted_and_leave_the_loop_its_turns(
    backend: str, new: int, redis_url: str
) -> None:
    """A flush that makes 1,000 new subscriptions beside 5,000 held ones counts them all, and the
    in-process cache (no Redis, or an outage) no longer holds every request for seconds: the
    count read every subscription for each new one, and nothing in the flush gave the loop a
    turn (`bench.subflush`)."""
    import asyncio
    import time

    import redis.asyncio as aioredis

    from aggregator.caller import Caller
    from aggregator.freshness.subscriptions import DUE, Subscriptions
    from aggregator.render.formats import FORMATS
    from aggregator.store.memory import MemoryCache
    from aggregator.store.redis_cache import RedisCache

    client = aioredis.Redis.from_url(redis_url) if backend == "redis" else None
    if client is not None:
        await client.flushdb()
    cache = RedisCache(client) if client is not None else MemoryCache()
    cfg = parse_config_text('[[orgs]]\nid = "a"\napi_key = "k"\n')
    subs = Subscriptions(cfg, cache, time.time, {f.name: f.path for f in FORMATS})
    reader = Caller(None, ("a",))
    await cache.schedule(DUE, {f"held{i:05d}": time.time() + 3600 for i in range(5_000)}, 86_400)
    for _ in range(2):  # a URL polled again is a subscription; 50 readers, up to 20 feeds each
        for i in range(new):
            subs.polled(
                f"atom/search.atom?q=topic{i}#",
                "atom",
                f"/search.atom?q=topic{i}",
                reader,
                lambda i=i: f"reader{i % 50}",
            )
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        ticker = asyncio.create_task(count_turns())
        await subs.flush()
        ticker.cancel()
        assert backend == "redis" or turns > 1  # other requests were served during the flush
    assert await subs.count() == 5_000 + new
    if client is not None:
        await client.flushdb()
        await client.aclose()


async def test_two_spellings_of_one_feed_polled_in_one_flush_are_one_subscription() -> None:
    """A flush reads its feeds' records together; two spellings of one search must still add up."""
    import time

    from aggregator.caller import Caller
    from aggregator.freshness.subscriptions import Subscriptions
    from aggregator.render.formats import FORMATS
    from aggregator.store.memory import MemoryCache

    cfg = parse_config_text('[[orgs]]\nid = "a"\napi_key = "k"\n[[orgs]]\nid = "b"\napi_key = "k2"\n')
    subs = Subscriptions(cfg, MemoryCache(), time.time, {f.name: f.path for f in FORMATS})
    reader = Caller(None, ("a", "b"))
    subs.polled(
        "atom/search.atom?q=lab+safety&org=a#",
        "atom",
        "/search.atom?q=lab+safety&org=a",
        reader,
        lambda: "reader",
    )
    subs.polled(
        "atom/search.atom?org=a&q=lab%20safety#",
        "atom",
        "/search.atom?org=a&q=lab%20safety",
        reader,
        lambda: "reader",
    )
    await subs.flush()
    assert await subs.count() == 1  # fetched twice: kept fresh, once
