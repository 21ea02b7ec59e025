"""An org's breaker (ilos.breaker): it opens after failures, probes once its cool-down ends, and closes; a refused key is skipped for ten minutes."""

from __future__ import annotations

import json

from aggregator.web.app import create_app
from tests.conftest import KEYS, make_config
from tests.helpers import timing


async def test_the_breaker_opens_probes_and_closes(aiohttp_client, sim, clock) -> None:
    client = await aiohttp_client(create_app(make_config(sim), clock=clock))
    hr = sim.org("hr")
    hr.fault = "503"

    async def hr_status(q: str) -> str:
        return timing(await client.get("/search.atom", params={"q": q}))["hr"]

    assert [await hr_status(q) for q in ("a1", "a2", "a3")] == ["error"] * 3
    assert await hr_status("a4") == "skipped"  # open: an org known to be down costs nothing
    assert len(sim.calls("hr", "search")) == 3
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["hr"]["breaker"] == "open" and ready["orgs"]["hr"]["breaker_reason"] == "HTTP 503"
    assert ready["orgs"]["engineering"]["breaker"] == "closed"
    clock.advance(5.1)  # the first cool-down is 5 s; one probe, which fails: 10 s now
    assert await hr_status("a5") == "error"
    assert await hr_status("a6") == "skipped"
    assert len(sim.calls("hr", "search")) == 4
    clock.advance(5.1)
    assert await hr_status("a7") == "skipped"  # still cooling down (10 s)
    hr.fault = None
    clock.advance(5.1)
    assert await hr_status("a8") == "ok"  # the probe succeeds and closes it
    assert await hr_status("a9") == "ok"
    assert (await (await client.get("/readyz")).json())["orgs"]["hr"]["breaker"] == "closed"


async def test_a_refused_key_is_skipped_for_ten_minutes(aiohttp_client, sim, clock, caplog) -> None:
    client = await aiohttp_client(create_app(make_config(sim), clock=clock))
    sim.org("medicine").fault = "401"
    assert timing(await client.get("/search.atom", params={"q": "x1"}))["medicine"] == "denied"
    assert timing(await client.get("/search.atom", params={"q": "x2"}))["medicine"] == "skipped"
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["medicine"]["breaker_reason"] == "key refused"
    assert "refused the org's API key" in caplog.text
    assert KEYS["medicine"] not in caplog.text + json.dumps(ready)
    clock.advance(599)
    assert timing(await client.get("/search.atom", params={"q": "x3"}))["medicine"] == "skipped"
    sim.org("medicine").fault = None
    clock.advance(2)
    assert timing(await client.get("/search.atom", params={"q": "x4"}))["medicine"] == "ok"
