"""Spending a tight budget where more callers benefit: repeated queries before one-off ones, and the
durations of what a page shows before the rest (issue 25; contract: "Budget priority").

Real loopback HTTP to the simulated ilos and to our app; the budget's windows and answers' freshness
follow the injected clock.
"""

from __future__ import annotations

import json

from aggregator.web.app import create_app
from tests.conftest import make_config
from tests.helpers import timing


async def test_a_repeated_query_stays_fresh_while_one_off_queries_exhaust_the_key(
    aiohttp_client, sim, clock
) -> None:
    # 4 requests per 10 minutes; a query asked for the first time leaves half of them.
    config = make_config(
        sim,
        upstream={"rate_limit": 4, "rate_window": 600, "one_off_reserve": 0.5},
        cache={"search_ttl": 60},
    )
    client = await aiohttp_client(create_app(config, clock=clock))

    async def ask(query: str) -> str:
        return timing(await client.get("/search.atom", params={"q": query, "org": "hr"}))["hr"]

    assert await ask("onboarding") == "ok"  # first asked: one-off, and the window was empty
    assert await ask("payroll") == "ok"  # one-off: 2 of 4 taken, half left
    assert [await ask(q) for q in ("benefits", "wellbeing", "pension")] == ["skipped"] * 3
    clock.advance(61)  # onboarding's answer has expired, and people ask for it again
    assert await ask("onboarding") == "ok"  # asked before: it may spend what one-offs must leave
    assert await ask("holidays") == "skipped"
    clock.advance(61)
    assert await ask("onboarding") == "ok"  # the last request of the window
    clock.advance(61)
    assert await ask("onboarding") == "stale"  # none left: its last answer, not nothing
    asked = [c.arg for c in sim.calls("hr", "search")]
    assert sorted(asked) == ["onboarding", "onboarding", "onboarding", "payroll"]
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["hr"]["window_spent"] == {"one-off": 2, "search": 2}


async def test_the_durations_a_page_shows_are_looked_up_first(aiohttp_client, sim, clock) -> None:
    # 8 requests an hour: the search and the page's 3 lookups fit; lookups no page waits for must
    # leave 6 (three times search_reserve), so none of them can run in this window.
    config = make_config(sim, upstream={"rate_limit": 8, "rate_window": 3600, "search_reserve": 0.25})
    client = await aiohttp_client(create_app(config, clock=clock))
    params = {"q": "analysis", "org": "engineering", "count": "3"}  # 8 videos, none with a duration
    resp = await client.get("/search.json", params=params)
    assert resp.headers["Server-Timing"].endswith('durations;desc="complete"')  # of what it shows
    shown = [item["_ilos"] for item in json.loads(await resp.read())["items"]]
    assert len(shown) == 3 and all(item["duration_ms"] for item in shown)
    looked_up = sorted(c.arg for c in sim.calls("engineering", "metadata"))
    assert looked_up == sorted(item["randtag"] for item in shown)
    # The other 5 wait in the deferred queue, behind searches, refreshes and what pages show.
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["engineering"]["deferred_durations"] == 5
