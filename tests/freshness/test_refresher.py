"""The refresh-ahead pass (freshness.refresher): a polled feed is fetched again before it expires, only near its reader's next poll, within its share of the budget, once across replicas."""

from __future__ import annotations

from aggregator.freshness.refresher import lead_time
from aggregator.web.state import SERVICES
from tests.freshness.test_subscriptions import TTL, config, searches, start, subscribe
from tests.helpers import server_timing


async def test_a_polled_feed_is_fetched_again_before_it_expires(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    app, client = await start(aiohttp_client, config(sim, redis_clean), clock)
    url = "/search.atom?q=lecture"
    await subscribe(client, url)
    before = searches(sim, "engineering")
    assert await app[SERVICES].refresher.run_once() == 0  # just fetched: nothing to do yet

    clock.advance(TTL - lead_time(TTL) / 2)  # inside the lead time before expiry
    assert await app[SERVICES].refresher.run_once() == 1
    assert searches(sim, "engineering") == before + 1

    assert "1 polled feed kept fresh" in await (await client.get("/status")).text()

    clock.advance(lead_time(TTL))  # past the first answer's expiry: the reader's next poll
    resp = await client.get(url)
    assert resp.status == 200
    statuses = {k: v for k, v in server_timing(resp).items() if k.startswith("org-")}
    assert set(statuses.values()) == {"cached"}, statuses  # answered without waiting for any org
    assert searches(sim, "engineering") == before + 1


async def test_refreshes_take_at_most_their_share_and_leave_searches_their_budget(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    # 200 a window, 1.5 % for refreshes: 3 refreshes per org per window, whatever is due.
    upstream = {"rate_limit": 200, "rate_window": 3600, "refresh_share": 0.015}
    app, client = await start(aiohttp_client, config(sim, redis_clean, upstream=upstream), clock)
    words = ["lecture", "analysis", "project", "induction", "mechanics", "circuit"]
    for word in words:
        await subscribe(client, f"/search.json?q={word}&org=engineering")
    assert await app[SERVICES].refresher.run_once() == 0
    clock.advance(TTL)  # every answer expired: six subscriptions due
    before = searches(sim, "engineering")
    assert await app[SERVICES].refresher.run_once() == 3
    assert searches(sim, "engineering") == before + 3
    # A user's new search still finds budget.
    resp = await client.get("/search.json?q=statics&org=engineering")
    assert server_timing(resp)["org-engineering"] == "ok"


async def test_a_reader_that_polls_hourly_is_kept_fresh_only_near_its_next_poll(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    app, client = await start(aiohttp_client, config(sim, redis_clean), clock)
    url = "/search.atom?q=lecture&org=engineering"
    resp = await client.get(url)
    await resp.read()
    await app[SERVICES].refresher.run_once()
    clock.advance(3600)
    resp = await client.get(url)  # polled again an hour later: a subscription with an hourly reader
    await resp.read()
    await app[SERVICES].refresher.run_once()
    before = searches(sim, "engineering")
    clock.advance(1800)  # its answer expired long ago, but its reader is not due for another half hour
    assert await app[SERVICES].refresher.run_once() == 0
    clock.advance(0.8 * 3600 - 1800 - lead_time(TTL) / 2)  # the window for its next poll is opening
    assert await app[SERVICES].refresher.run_once() == 1
    assert searches(sim, "engineering") == before + 1
    clock.advance(0.8 * 3600)  # the reader never came: past its window nothing more is fetched
    assert await app[SERVICES].refresher.run_once() == 0
    assert searches(sim, "engineering") == before + 1


async def test_replicas_sharing_redis_refresh_each_feed_once(aiohttp_client, sim, clock, redis_clean) -> None:
    one, client_one = await start(aiohttp_client, config(sim, redis_clean), clock)
    two, client_two = await start(aiohttp_client, config(sim, redis_clean), clock)
    url = "/search.rss?q=lecture&org=engineering"
    resp = await client_one.get(url)  # a reader's polls land on either replica
    await resp.read()
    resp = await client_two.get(url)
    await resp.read()
    await one[SERVICES].refresher.run_once()
    await two[SERVICES].refresher.run_once()
    before = searches(sim, "engineering")
    clock.advance(TTL - lead_time(TTL) / 2)
    refreshed = await one[SERVICES].refresher.run_once() + await two[SERVICES].refresher.run_once()
    assert refreshed == 1
    assert searches(sim, "engineering") == before + 1
