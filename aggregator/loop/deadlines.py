"""Waiting no longer than a deadline, whatever is waited on (an org, Redis, a pool).

A search promises its caller an answer within `upstream.deadline`. Each org's
fetch is bounded by its own timeout, but Redis round trips, pool waits and
locks were not: a stalled Redis made searches take its stall on top of the
deadline. Every step of a search now runs through `within`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(deadline: float, step: Awaitable[T], otherwise: T) -> T:
    """`step`'s result if it comes by `deadline` (a `time.monotonic()` instant), else `otherwise`.

    The step is cancelled when the deadline passes; what must go on regardless (a shared fetch)
    is shielded by whoever started it."""
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + deadline - time.monotonic()):
            return await step
    except TimeoutError:
        return otherwise
