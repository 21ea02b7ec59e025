"""Keeping the garbage collector's full collections short and out of other steps of the loop.

`settle_heap` moves the start-up heap out of every full collection;
`collect_in_own_turns` runs the full collections as turns of their own.
"""

from __future__ import annotations

import asyncio
import gc

FULL_COLLECTION_EVERY = 1.0  # seconds between full collections at most, under load


NEVER = 2**31 - 1  # a generation threshold no count reaches


_collecting_tasks = 0  # how many `collect_in_own_turns` run in this process (apps in tests: several)


_oldest_threshold = 10  # CPython's own, kept while they run


def settle_heap() -> None:
    """Call once start-up is done: keeps the start-up heap out of every later full collection.

    A full (generation 2) collection walks every container the process holds. After
    start-up that is ~65,000 objects of imported modules (aiohttp, redis, lxml,
    prometheus-client, jinja2...), and one walk of them held the loop for 40-65 ms
    on this machine, in the middle of whichever request allocated last. None of
    them is ever garbage, so they are moved to the permanent generation
    (`gc.freeze`, the remedy the gc module's docs give) and full collections walk
    only what serving creates.
    """
    gc.collect()
    gc.freeze()


async def collect_in_own_turns(interval: float = FULL_COLLECTION_EVERY) -> None:
    """Runs until cancelled: full collections as steps of their own, never inside a request's step.

    Left to itself, CPython starts a full collection in whichever allocation
    tips its count (after ten young-generation collections), and that is most
    often inside the longest steps, since they allocate the most: a merge, or
    500 videos decoded. A collection of a few milliseconds then lands on top
    of a step of several more, and the loop is late by their sum. Here the
    oldest generation's automatic threshold is set out of reach and this task
    runs the same collection, when it is due, from a timer: at most one per
    `interval` seconds, as its own turn of the loop. The young generations
    keep collecting automatically (they are short, and their garbage must
    not wait). On cancellation the threshold is put back.
    """
    global _collecting_tasks, _oldest_threshold
    if _collecting_tasks == 0:  # the collector is the process's: the first app to start takes it over
        young, middle, _oldest_threshold = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)
    _collecting_tasks += 1
    try:
        while True:
            await asyncio.sleep(interval)
            if gc.get_count()[2] > _oldest_threshold:  # as many middle collections as CPython waits for
                gc.collect(2)
    finally:
        _collecting_tasks -= 1
        if _collecting_tasks == 0:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, _oldest_threshold)
