"""Held windows (store.held): an upstream that counts requests when they arrive never sees more
than the limit in any rolling window, whatever the latency, and Redis faults hand out nothing.

The upstream here is a list of arrival times; the clock is the test's. A unit is taken, its
request arrives up to `hold` seconds later and ends (is released) some time after it arrives,
or never (its process died).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import CacheConfig
from aggregator.store.held import PREFIX, HeldWindows
from aggregator.store.redis_cache import redis_client
from tests.conftest import FakeClock

WINDOW = 60.0
HOLD = 6.0  # the longest from taking a unit to its request's arrival
LIMIT = 10


def most_in_any_window(arrivals: list[float], window: float) -> int:
    """The upstream's highest rolling count: arrivals in any [t, t + window), as ilos forgets a
    request exactly a window after it arrived (the simulator's rule too)."""
    arrivals = sorted(arrivals)
    return max((bisect_left(arrivals, t + window) - i for i, t in enumerate(arrivals)), default=0)


# One request attempt: seconds after the previous one, how many units wanted, how long until its
# requests arrive (within HOLD), how long each then takes to end, and whether its process died first.
attempt = st.tuples(
    st.floats(0, 20),
    st.integers(1, 4),
    st.floats(0, HOLD),
    st.floats(0, 4),
    st.booleans(),
)


async def run_schedule(windows: list[HeldWindows], clock: FakeClock, schedule: list[tuple]) -> list[float]:
    """Play the attempts (taking turns between the processes); the upstream's arrival times."""
    arrivals: list[float] = []
    pending: list[tuple[float, int, list[str]]] = []  # (when it ends, process, units)
    for n, (gap, want, delay, duration, dies) in enumerate(schedule):
        clock.advance(gap)
        for ends, who, units in sorted(p for p in pending if p[0] <= clock.now):
            pending.remove((ends, who, units))
            saved, clock.now = clock.now, ends
            await windows[who].release("k", units, WINDOW)
            clock.now = saved
        who = n % len(windows)
        units = await windows[who].take("k", LIMIT, LIMIT // len(windows), want, WINDOW, HOLD)
        arrivals += [clock.now + delay] * len(units)
        if units and not dies:
            pending.append((clock.now + delay + duration, who, units))
    return arrivals


@settings(max_examples=150, deadline=None)
@given(schedule=st.lists(attempt, min_size=1, max_size=60))
async def test_alone_the_upstream_never_counts_more_than_the_limit(schedule) -> None:
    clock = FakeClock()
    arrivals = await run_schedule([HeldWindows(None, clock=clock)], clock, schedule)
    assert most_in_any_window(arrivals, WINDOW) <= LIMIT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(attempt, min_size=1, max_size=60))
async def test_two_processes_on_redis_never_let_the_upstream_count_more(redis_url, schedule) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.delete(PREFIX + "k")
    clock = FakeClock()
    try:
        processes = [HeldWindows(client, clock=clock), HeldWindows(client, clock=clock)]
        arrivals = await run_schedule(processes, clock, schedule)
    finally:
        await client.delete(PREFIX + "k")
        await client.aclose()
    assert most_in_any_window(arrivals, WINDOW) <= LIMIT


async def test_units_taken_at_once_whose_requests_arrive_late_are_still_counted() -> None:
    """The measured failure: a window's worth taken at once, the requests arriving 100 ms later.
    Stamped when taken, the next window opened before the upstream's did."""
    clock = FakeClock()
    windows = HeldWindows(None, clock=clock)
    first = await windows.take("k", LIMIT, LIMIT, LIMIT, WINDOW, HOLD)
    clock.advance(0.1)  # they arrive, and are answered
    await windows.release("k", first, WINDOW)
    clock.advance(WINDOW - 0.05)  # a window after they were taken, not after they arrived
    assert await windows.take("k", LIMIT, LIMIT, 1, WINDOW, HOLD) == []
    clock.advance(0.1)
    assert len(await windows.take("k", LIMIT, LIMIT, 1, WINDOW, HOLD)) == 1


@pytest.fixture
def budget_redis(redis_process):
    yield redis_process
    if redis_process.proc is None:
        redis_process.start()


async def test_a_redis_stopped_then_restarted_empty_hands_out_no_fresh_window(budget_redis) -> None:
    """Two processes at a limit of 20: a burst, Redis stopped, a burst, Redis back empty, a burst.
    Before, each phase got a fresh 20 (60 in under a minute)."""
    clock = FakeClock()
    # Clients made as the service makes them (`store.redis_cache.redis_client`): a command on a
    # pooled connection that the restart cut is tried once more, on a new connection.
    config = CacheConfig(redis_url=budget_redis.url, redis_timeout=0.5, redis_connect_timeout=0.5)
    clients = [redis_client(config) for _ in range(2)]
    processes = [HeldWindows(c, retry_seconds=5.0, clock=clock) for c in clients]
    taken = 0

    async def burst(n: int) -> None:
        nonlocal taken
        for i in range(n):
            units = await processes[i % 2].take("k", 20, 10, 1, WINDOW, HOLD)
            await processes[i % 2].release("k", units, WINDOW)
            taken += len(units)

    try:
        await burst(25)
        assert taken == 20
        budget_redis.stop()
        await burst(25)  # each process: the window it last saw, and its own share
        budget_redis.start()  # same port, empty (no persistence)
        clock.advance(6)  # past retry_seconds: Redis is asked again
        await burst(25)
        assert taken == 20
        assert sync_redis.Redis.from_url(budget_redis.url).zcard(PREFIX + "k") == 20  # written back
        clock.advance(WINDOW)  # a window later, the budget is whole again
        await burst(25)
        assert taken == 40
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def test_what_the_upstream_says_it_counted_is_charged_even_right_after_a_refusal(redis_url) -> None:
    """A full window remembers its refusals for a moment; a charge (ilos's own count, always taken)
    must not be refused by that memory."""
    client = aioredis.Redis.from_url(redis_url)
    await client.delete(PREFIX + "charged")
    clock = FakeClock()
    process = HeldWindows(client, clock=clock)
    assert len(await process.take("charged", 4, 4, 4, WINDOW, HOLD)) == 4
    assert await process.take("charged", 4, 4, 1, WINDOW, HOLD) == []  # full: refused, and remembered
    await process.charge("charged", 3, WINDOW)
    assert (await process.figures("charged", 4, 4)).held.get("upstream") == 3
    await client.delete(PREFIX + "charged")
