"""What keeps the loop free: paced admission wakes each waiter once, in arrival order;
long-lived state gives the garbage collector's full collections little to walk, and they
run in turns of their own without leaving garbage behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref

from aggregator.loop.heap import collect_in_own_turns
from aggregator.loop.lag import time_iterations
from aggregator.loop.turns import Pacer, Turn, in_turns, repeat
from aggregator.search.suggestions import SuggestionIndex


async def test_paced_admissions_come_in_batches_in_arrival_order() -> None:
    pacer = Pacer(most=4, interval=0.01, least=4)
    admitted: list[int] = []
    batches: list[list[int]] = []

    async def one(i: int) -> None:
        await pacer.admit()
        admitted.append(i)

    tasks = [asyncio.create_task(one(i)) for i in range(20)]
    while len(admitted) < 20:
        before = len(admitted)
        await asyncio.sleep(0)
        if len(admitted) > before:
            batches.append(admitted[before:])
    await asyncio.gather(*tasks)
    assert admitted == list(range(20))  # first come, first served
    assert max(len(batch) for batch in batches) <= 4  # never more than a window's worth in one turn


async def test_a_waiter_cancelled_in_the_queue_spends_no_admission() -> None:
    pacer = Pacer(most=2, interval=0.01, least=2)
    await pacer.admit()
    await pacer.admit()  # the first window is full
    gone = asyncio.create_task(pacer.admit())
    kept = [asyncio.create_task(pacer.admit()) for _ in range(2)]
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(
        asyncio.gather(*kept), 5
    )  # both fit the next window: the cancelled one took no place


def test_learned_phrases_leave_the_garbage_collector_nothing_to_walk() -> None:
    """A full suggestion index must not add 15,000 objects to every full collection (loop stalls)."""
    index = SuggestionIndex(max_phrases=5000)
    for n in range(6000):
        index.add_title(f"Lecture {n}: onboarding", ["hr" if n % 2 else "engineering"])
    index.add_query("lecture", ["hr"], "one caller")
    gc.collect()
    tracked = [key for key, phrase in index._phrases.items() if gc.is_tracked(phrase)]
    assert len(index) == 5000 and len(tracked) <= 1
    assert index.suggest("lecture 5999", ["hr"]) == ["Lecture 5999: onboarding"]
    assert index.suggest("lecture 5999", ["engineering"]) == []


async def test_full_collections_still_free_cycles_when_run_in_their_own_turns() -> None:
    """Full collections are moved out of other steps, not lost: old cyclic garbage is freed,
    and CPython's own schedule comes back when the service stops."""

    class Node:
        partner: object = None

    before = gc.get_threshold()
    task = asyncio.create_task(collect_in_own_turns(interval=0))
    await asyncio.sleep(0)
    assert gc.get_threshold()[2] > 1_000_000  # no full collection starts inside a step of ours
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    gone = weakref.ref(first)
    gc.collect(1)  # both survive the young collections: they are old now
    del first, second
    for _ in range(before[2] + 1):  # as many middle collections as make a full one due
        gc.collect(1)
    assert gone() is not None  # old garbage waits for a full collection...
    for _ in range(3):
        await asyncio.sleep(0)
    assert gone() is None  # ...which the task ran
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert gc.get_threshold() == before


async def test_a_chore_stops_even_when_a_pass_swallows_its_cancellation() -> None:
    """Shutdown waits for the background chores; one that never ends would hang it."""

    async def swallowing_pass() -> None:
        # as Python 3.11's wait_for can, when its inner wait ends at that moment
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    task = asyncio.create_task(repeat(swallowing_pass, 0, "test chore"))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()


def _burn_cpu(seconds: float) -> None:
    """Hold the loop with CPU work, as a long step of ours would."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def test_an_iteration_that_holds_the_loop_is_reported_with_its_cpu() -> None:
    """The stall figure in /metrics: what one iteration of the loop cost its thread."""
    seen: list[float] = []
    stop = time_iterations(seen.append)
    try:
        await asyncio.sleep(0)  # the wrapped select ends an iteration: measuring starts clean
        seen.clear()
        _burn_cpu(0.03)
        await asyncio.sleep(0)  # the iteration ends: the loop selects again
        await asyncio.sleep(0)
    finally:
        stop()
    assert seen and max(seen) >= 0.03
    _burn_cpu(0.03)
    count = len(seen)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(seen) == count  # stopped: nothing more is observed


async def test_two_apps_on_one_loop_both_see_its_iterations() -> None:
    first: list[float] = []
    second: list[float] = []
    stops = [time_iterations(first.append), time_iterations(second.append)]
    try:
        await asyncio.sleep(0)
        _burn_cpu(0.01)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    finally:
        for stop in stops:
            stop()
    assert max(first) >= 0.01 and max(second) >= 0.01


async def test_long_work_in_turns_lets_others_run_between_its_parts() -> None:
    """`in_turns` gives the loop back once its budget of time is spent (here: after each item)."""
    order: list[str] = []

    async def other() -> None:
        for _ in range(3):
            order.append("other")
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    out = await in_turns(range(3), lambda i: order.append(f"item {i}") or i * 2, budget=0)
    await task
    assert out == [0, 2, 4]
    assert order.index("other") < order.index("item 2")  # the other task ran before the work ended


async def test_a_loop_of_awaits_that_never_suspend_gives_the_loop_turns() -> None:
    """An in-memory cache answers every await at once: a drain of 1,000 deferred lookups held the
    loop 51 ms until `Turn` gave it back (here after each pass)."""
    order: list[str] = []

    async def answered_at_once() -> None:
        return None

    async def other() -> None:
        order.append("other")

    task = asyncio.create_task(other())
    turn = Turn(budget=0)
    for i in range(3):
        await answered_at_once()
        order.append(f"pass {i}")
        if turn.due():
            await turn.end()
    await task
    assert order.index("other") < order.index("pass 2")
