"""What ilos's network can do to an answer, through a proxy of our own (`tests.faultproxy`): late,
slow, cut in the middle, stalled after its headers, slow to close. Never a 5xx, never past the
deadline, and what arrived whole is used.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from aggregator.web.app import create_app
from tests.conftest import make_config
from tests.faultproxy import FaultProxy
from tests.helpers import timing


@pytest.fixture
async def proxy(sim):
    target = urlsplit(sim.base_url)
    running = await FaultProxy(target.hostname or "127.0.0.1", target.port or 80, seed=7).start()
    yield running
    await running.stop()


async def app_through(aiohttp_client, sim, proxy, clock, **upstream):
    config = make_config(
        sim,
        upstream={"base_url": f"http://127.0.0.1:{proxy.port}", "timeout": 1.0, "deadline": 2.0, **upstream},
    )
    return await aiohttp_client(create_app(config, clock=clock))


async def search(client, q: str = "onboarding"):
    started = time.monotonic()
    resp = await client.get("/search.atom", params={"q": q})
    await resp.read()
    return resp, time.monotonic() - started


async def test_latency_with_jitter_and_a_bandwidth_cap_still_answer(
    aiohttp_client, sim, proxy, clock
) -> None:
    proxy.set(latency=0.05, jitter=0.04, bandwidth=200_000)
    client = await app_through(aiohttp_client, sim, proxy, clock)
    resp, _ = await search(client)
    assert resp.status == 200 and set(timing(resp).values()) == {"ok"}


async def test_an_answer_cut_mid_body_is_that_orgs_error(aiohttp_client, sim, proxy, clock) -> None:
    proxy.set(reset_after=600)  # past the headers, inside the feed
    client = await app_through(aiohttp_client, sim, proxy, clock)
    resp, took = await search(client)
    assert resp.status == 200 and took < 2.5
    assert set(timing(resp).values()) <= {"error", "timeout"}  # a half feed is not an answer
    proxy.set(reset_after=None)
    again, _ = await search(client, "payroll")
    assert set(timing(again).values()) == {"ok"}  # the next connection is whole again


async def test_an_answer_that_stalls_after_its_headers_times_out_within_the_deadline(
    aiohttp_client, sim, proxy, clock
) -> None:
    proxy.set(hang_after_headers=True)
    client = await app_through(aiohttp_client, sim, proxy, clock, timeout=0.5, deadline=1.0)
    resp, took = await search(client)
    assert resp.status == 200 and took < 1.5
    assert set(timing(resp).values()) == {"timeout"}


async def test_a_slow_close_costs_nothing_once_the_body_is_in(aiohttp_client, sim, proxy, clock) -> None:
    proxy.set(slow_close=3.0)
    client = await app_through(aiohttp_client, sim, proxy, clock)
    resp, took = await search(client)
    assert resp.status == 200 and set(timing(resp).values()) == {"ok"}
    assert took < 1.5  # the body is complete by its length: nobody waits for the close
