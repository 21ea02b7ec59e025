"""Duration lookups (ilos.durations): reused across queries, waited for at most duration_wait, finished in the background, and a video whose duration cannot be had is still listed."""

from __future__ import annotations

import json

from aggregator.demo.simulator import search_catalog
from aggregator.web.app import create_app
from tests.conftest import make_config
from tests.helpers import NS, assert_valid_atom, timing
from tests.ilos.test_budget import durations_desc, poll


async def test_durations_are_reused_across_queries(redis_client_app, sim) -> None:
    client = await redis_client_app()
    await client.get("/search.atom", params={"q": "onboarding", "org": "engineering"})
    looked_up = {c.arg for c in sim.calls("engineering", "metadata")}
    welcome = search_catalog(sim.org("engineering").videos, "welcome")[0].randtag
    assert welcome in looked_up
    sim.log.clear()
    resp = await client.get("/search.atom", params={"q": "welcome", "org": "engineering"})
    assert welcome not in {c.arg for c in sim.calls(endpoint="metadata")}
    entry = assert_valid_atom(await resp.read()).find("a:entry", NS)
    assert entry.find("media:content", NS).get("duration")


async def test_pending_durations_are_said_in_every_format_and_heal(aiohttp_client, sim, clock) -> None:
    config = make_config(
        sim, upstream={"rate_limit": 4, "rate_window": 2, "search_reserve": 0.25}, cache={"incomplete_ttl": 5}
    )
    client = await aiohttp_client(create_app(config, clock=clock))
    params = {"q": "analysis", "org": "engineering"}  # 8 videos, none with a duration in the feed
    atom = await client.get("/search.atom", params=params)
    # One search, then lookups while a quarter of the window stays for searches: 2 of 8.
    assert durations_desc(atom) == "pending 6"
    entries = assert_valid_atom(await atom.read()).findall("a:entry", NS)
    with_duration = [e for e in entries if e.find("media:content", NS).get("duration")]
    assert len(entries) == 8 and len(with_duration) == 2
    assert int(atom.headers["Cache-Control"].rsplit("=", 1)[1]) <= 5  # fresh only for incomplete_ttl
    feed = json.loads(await (await client.get("/search.json", params=params)).read())
    assert sum(1 for item in feed["items"] if item["_ilos"]["duration_ms"] is None) == 6
    page = await (await client.get("/", params=params)).text()
    assert page.count("length pending</span>") == 6

    async def healed() -> bool:
        clock.advance(6)  # past incomplete_ttl: the next request looks again
        resp = await client.get("/search.atom", params=params)
        return durations_desc(resp) == "complete"

    await poll(healed)  # the deferred lookups run as the 2 s window refills
    entries = assert_valid_atom(await (await client.get("/search.atom", params=params)).read()).findall(
        "a:entry", NS
    )
    assert all(e.find("media:content", NS).get("duration") for e in entries)
    assert len(sim.calls("engineering", "search")) == 1  # healed from the duration cache, not by asking again
    assert sorted(c.arg for c in sim.calls("engineering", "metadata")) == sorted(
        {c.arg for c in sim.calls("engineering", "metadata")}
    )  # each video looked up once


async def test_a_search_that_finds_no_budget_does_not_wait(aiohttp_client, sim, clock) -> None:
    config = make_config(sim, upstream={"rate_limit": 2, "rate_window": 3600, "one_off_reserve": 0})
    client = await aiohttp_client(create_app(config, clock=clock))
    for q in ("payroll", "benefits"):
        assert timing(await client.get("/search.atom", params={"q": q, "org": "hr"}))["hr"] == "ok"
    third = await client.get("/search.atom", params={"q": "onboarding", "org": "hr"})
    assert third.status == 200 and timing(third)["hr"] == "skipped"
    assert len(sim.calls("hr", "search")) == 2  # the third was never sent
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["hr"]["budget_remaining"] == 0 and ready["orgs"]["hr"]["budget_limit"] == 2
    # An answer already had stands in for a search the budget refuses.
    clock.advance(301)
    again = await client.get("/search.atom", params={"q": "payroll", "org": "hr"})
    assert timing(again)["hr"] == "stale"


async def test_videos_whose_duration_fails_are_still_listed(client, sim) -> None:
    engineering = sim.org("engineering")  # RSS without duration children
    broken = search_catalog(engineering.videos, "lecture")[0].randtag
    engineering.broken_durations.add(broken)
    resp = await client.get("/search.atom", params={"q": "lecture", "org": "engineering", "count": "100"})
    doc = assert_valid_atom(await resp.read())
    entry = next(e for e in doc.findall("a:entry", NS) if e.findtext("a:id", namespaces=NS).endswith(broken))
    assert entry.find("media:content", NS).get("duration") is None
    assert "Duration" not in entry.findtext("a:summary", namespaces=NS)
    with_durations = [e for e in doc.findall("a:entry", NS) if e.find("media:content", NS).get("duration")]
    assert len(with_durations) == len(doc.findall("a:entry", NS)) - 1
