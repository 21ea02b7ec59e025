"""Stable thumbnail URLs (search.thumbnails): they redirect to the current signed image, re-signed when it expired, and a change of signature alone never changes a feed's bytes."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aggregator.demo.simulator import search_catalog
from aggregator.web.app import create_app
from tests.conftest import KEYS, make_config
from tests.helpers import timing


async def test_thumbnails_redirect_to_the_current_signed_image(client, sim) -> None:
    await client.get("/search.atom", params={"q": "onboarding"})
    tag = search_catalog(sim.org("hr").videos, "onboarding")[0].randtag
    resp = await client.get(f"/thumbnails/{tag}", allow_redirects=False)
    assert resp.status == 302
    target = resp.headers["Location"]
    assert urlsplit(target).path == f"/thumbs/{tag}.png"
    image = await client.session.get(target)
    assert image.status == 200 and image.content_type == "image/png"
    assert (await client.get("/thumbnails/Unknown12345", allow_redirects=False)).status == 404
    assert (await client.get("/thumbnails/..%2f..", allow_redirects=False)).status == 404


async def test_feed_is_byte_identical_when_only_signatures_changed(redis_client_app, sim, clock) -> None:
    client = await redis_client_app(search_ttl=300)
    first = await client.get("/search.atom", params={"q": "onboarding"})
    body = await first.read()
    clock.advance(301)
    calls = len(sim.calls(endpoint="search"))
    second = await client.get("/search.atom", params={"q": "onboarding"})
    assert set(timing(second).values()) == {"ok"}  # fetched again: upstream re-signed every thumbnail
    assert len(sim.calls(endpoint="search")) == calls + 3
    assert await second.read() == body
    assert second.headers["ETag"] == first.headers["ETag"]
    stale_etag = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert stale_etag.status == 304


async def test_expired_thumbnails_are_re_signed(aiohttp_client, redis_clean, clock) -> None:
    from aggregator.demo.samples import demo_orgs
    from aggregator.demo.simulator import Simulator

    sim = Simulator(demo_orgs(KEYS), thumbnail_ttl=90)  # signatures good for 90 s
    await sim.start()
    try:
        client = await aiohttp_client(
            create_app(make_config(sim, cache={"redis_url": redis_clean}), clock=clock)
        )
        await client.get("/search.atom", params={"q": "onboarding", "org": "hr"})
        tag = search_catalog(sim.org("hr").videos, "onboarding")[0].randtag
        fresh = await client.get(f"/thumbnails/{tag}", allow_redirects=False)
        assert fresh.status == 302 and len(sim.calls("hr", "search")) == 1  # good for long enough
        clock.advance(61)  # now within a minute of expiring, from an answer a minute old
        responses = await asyncio.gather(
            *(client.get(f"/thumbnails/{tag}", allow_redirects=False) for _ in range(50))
        )
        assert {r.status for r in responses} == {302}
        assert len(sim.calls("hr", "search")) == 2  # 50 readers, one search for new signatures
        location = responses[0].headers["Location"]
        assert location != fresh.headers["Location"]
        image = await client.session.get(location)
        assert image.status == 200
        sim.org("hr").fault, sim.org("hr").retry_after = "429", 600  # while the org cools down, none at all
        await client.get("/search.atom", params={"q": "payroll", "org": "hr"})
        clock.advance(61)
        calls = len(sim.calls("hr", "search"))
        for _ in range(20):
            await client.get(f"/thumbnails/{tag}", allow_redirects=False)
        assert len(sim.calls("hr", "search")) == calls
    finally:
        await sim.stop()
