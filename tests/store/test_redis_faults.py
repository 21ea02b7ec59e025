"""What the network to Redis can do, through a proxy of our own (`tests.faultproxy`): late
replies, a Redis that stops answering mid-conversation, connections reset under commands. The
service answers every search within its deadline, never a 5xx, and comes back to Redis after.
"""

from __future__ import annotations

import time

import pytest

from aggregator.web.app import create_app
from tests.conftest import make_config
from tests.faultproxy import FaultProxy
from tests.helpers import timing


@pytest.fixture
async def redis_proxy(redis_process):
    running = await FaultProxy("127.0.0.1", redis_process.port, seed=11).start()
    yield running
    await running.stop()


async def app_through(aiohttp_client, sim, redis_proxy, clock):
    config = make_config(
        sim,
        cache={"redis_url": f"redis://127.0.0.1:{redis_proxy.port}/0", "redis_timeout": 2.0},
        upstream={"deadline": 0.8},
    )
    return await aiohttp_client(create_app(config, clock=clock))


async def search(client, q: str):
    started = time.monotonic()
    resp = await client.get("/search.atom", params={"q": q})
    await resp.read()
    return resp, time.monotonic() - started


async def test_late_redis_replies_are_still_used(aiohttp_client, sim, redis_proxy, clock) -> None:
    redis_proxy.set(latency=0.005, jitter=0.004)
    client = await app_through(aiohttp_client, sim, redis_proxy, clock)
    assert set(timing((await search(client, "onboarding"))[0]).values()) == {"ok"}
    resp, _ = await search(client, "onboarding")  # a new page of it would do too: the answers are cached
    again = await client.get("/search.atom", params={"q": "onboarding", "count": "2"})
    assert resp.status == 200 and set(timing(again).values()) == {"cached"}
    assert (await (await client.get("/readyz")).json())["cache"] == "redis"


async def test_a_redis_that_stops_answering_costs_a_search_its_deadline(
    aiohttp_client, sim, redis_proxy, clock
) -> None:
    client = await app_through(aiohttp_client, sim, redis_proxy, clock)
    assert (await search(client, "induction"))[0].status == 200  # pooled connections made
    redis_proxy.set(stall=True)  # replies stop coming, connections stay open
    for q in ("payroll", "safety"):
        resp, took = await search(client, q)
        assert resp.status == 200 and took < 0.8 + 0.7, (q, took)  # redis_timeout is 2 s


async def test_connections_reset_under_commands_fall_back_then_come_back(
    aiohttp_client, sim, redis_proxy, clock
) -> None:
    client = await app_through(aiohttp_client, sim, redis_proxy, clock)
    assert (await search(client, "induction"))[0].status == 200
    redis_proxy.set(reset_after=0)  # every reply cut: a Redis behind a failing middlebox
    resp, took = await search(client, "payroll")
    assert resp.status == 200 and took < 1.2 and set(timing(resp).values()) == {"ok"}  # from memory
    assert (await (await client.get("/readyz")).json())["cache"] != "redis"
    redis_proxy.set(reset_after=None)
    clock.advance(6)  # past redis_retry_seconds: Redis is tried again
    await search(client, "welcome")
    assert (await (await client.get("/readyz")).json())["cache"] == "redis"
