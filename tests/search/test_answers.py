"""One org's answer (search.answers): cached, shared between concurrent misses in one process and across processes, stale when the org fails, refreshed behind a stale answer."""

from __future__ import annotations

import asyncio
import subprocess

import aiohttp

from tests.conftest import KEYS, config_toml, free_port
from tests.helpers import assert_valid_atom, entry_ids, serve, timing, wait_until_up


async def test_repeat_queries_make_no_upstream_call(redis_client_app, sim) -> None:
    client = await redis_client_app()
    first = await client.get("/search.atom", params={"q": "onboarding"})
    assert set(timing(first).values()) == {"ok"}
    calls = len(sim.log)
    # Another page and another spelling of the same query: org answers come from Redis.
    second = await client.get("/search.atom", params={"q": "  ONBOARDING ", "count": "5"})
    assert second.status == 200 and set(timing(second).values()) == {"cached"}
    assert len(sim.log) == calls


async def test_concurrent_identical_misses_share_one_request_per_org(redis_client_app, sim) -> None:
    client = await redis_client_app()
    for org in sim.orgs:
        org.latency = 0.2
    responses = await asyncio.gather(
        *(client.get("/search.atom", params={"q": "onboarding"}) for _ in range(200))
    )
    assert {r.status for r in responses} == {200}
    bodies = {await r.read() for r in responses}
    assert len(bodies) == 1
    assert {o: len(sim.calls(o, "search")) for o in KEYS} == dict.fromkeys(KEYS, 1)


async def test_two_processes_on_one_redis_share_one_request_per_org(sim, redis_clean, tmp_path) -> None:
    for org in sim.orgs:
        org.latency = 0.3
    ports = [free_port(), free_port()]
    procs = []
    for port in ports:
        path = tmp_path / f"config-{port}.toml"
        path.write_text(
            config_toml(sim, server={"port": port, "parse_workers": 0}, cache={"redis_url": redis_clean})
        )
        procs.append(serve(path))
    try:
        async with aiohttp.ClientSession() as session:
            for port in ports:
                await wait_until_up(session, f"http://127.0.0.1:{port}/healthz")
            urls = [f"http://127.0.0.1:{p}/search.atom?q=induction+OR+onboarding" for p in ports]
            responses = await asyncio.gather(*(session.get(urls[i % 2]) for i in range(200)))
            assert {r.status for r in responses} == {200}
            assert len({await r.read() for r in responses}) == 1
        assert {o: len(sim.calls(o, "search")) for o in KEYS} == dict.fromkeys(KEYS, 1)
    finally:
        for p in procs:
            p.terminate()
        logs = []
        for p in procs:
            # communicate, not wait then read: 200 access lines can fill the pipe, and a
            # process blocked writing its log never exits.
            try:
                logs.append(p.communicate(timeout=10)[1])
            except subprocess.TimeoutExpired:
                p.kill()  # never leave it behind, whatever else failed
                logs.append(p.communicate()[1] + b"\n(did not stop within 10 s of SIGTERM)")
        for err in logs:
            tail = err.decode(errors="replace")[-3000:]
            assert b"Traceback" not in err and b"did not stop" not in err, tail


async def test_stale_answer_when_an_org_fails_after_expiry(redis_client_app, sim, clock) -> None:
    client = await redis_client_app(search_ttl=300)
    first = await client.get("/search.atom", params={"q": "onboarding"})
    before = entry_ids(assert_valid_atom(await first.read()))
    clock.advance(301)
    sim.org("medicine").fault = "503"
    sim.org("hr").fault = "timeout"
    resp = await client.get("/search.atom", params={"q": "onboarding"}, timeout=aiohttp.ClientTimeout(10))
    assert timing(resp) == {"engineering": "ok", "medicine": "stale", "hr": "stale"}
    assert entry_ids(assert_valid_atom(await resp.read())) == before
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    assert int(resp.headers["Cache-Control"].rsplit("=", 1)[1]) <= 10  # a degraded page is short-lived
    page = await client.get("/", params={"q": "onboarding"})
    assert "<strong>Medicine</strong>: showing earlier results" in await page.text()


async def test_stale_while_revalidate_answers_at_once_and_refreshes_behind(
    redis_client_app, sim, clock
) -> None:
    client = await redis_client_app(search_ttl=300, stale_while_revalidate=60)
    first = await client.get("/search.atom", params={"q": "onboarding"})
    body = await first.read()
    clock.advance(301)
    for org in sim.orgs:
        org.latency = 0.3
    second = await client.get("/search.atom", params={"q": "onboarding", "count": "20"})
    # Had it waited for the orgs, they would be "ok"; "stale" means it answered from the old answers.
    assert set(timing(second).values()) == {"stale"}
    assert await second.read() == body
    # The refreshes land behind: poll (each poll a new page, past the page cache).
    for count in range(19, 0, -1):
        third = await client.get("/search.atom", params={"q": "onboarding", "count": str(count)})
        if set(timing(third).values()) == {"cached"}:
            break
        await asyncio.sleep(0.1)
    assert set(timing(third).values()) == {"cached"}
    assert len(sim.calls(endpoint="search")) == 6  # one refresh per org, however many polls
