"""The loop's own tools: paced admission keeps arrival order and wakes each waiter once."""

from __future__ import annotations

import asyncio

from aggregator.eventloop import Pacer


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
