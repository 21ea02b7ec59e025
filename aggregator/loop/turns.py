"""Cutting long work into turns of the event loop, so that one request's step never holds the others.

Every request shares one loop, so one long step delays them all: `in_turns`
cuts long work into turns, `off_loop` moves work that cannot be cut to a
thread, `repeat` runs a background chore that must not die, and `Pacer`
starts many requests at a pace the loop can take. How late the loop runs is
measured in `lag`; the collector is kept out of these steps in `heap`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
TURN_BUDGET = 0.002  # seconds of work between turns of the loop in `in_turns`


async def repeat(work: Callable[[], Awaitable[object]], interval: float, what: str) -> None:
    """Until cancelled: `work()`, then `interval` seconds' pause. A pass that fails is logged
    (its exception's name only) and the next one tries again: a chore must not die.

    Python 3.11's asyncio can swallow a cancellation that lands just as an inner
    wait ends (`asyncio.wait_for`, and code built like it). The loop would then
    run on, and the shutdown that awaits it would wait for ever: a test run hung
    in teardown that way, the deferred-lookup loop "cancelling" but still
    sleeping between passes. So the task's own count of cancellation requests
    is looked at after every pass too.
    """
    task = asyncio.current_task()
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: pass failed (%s)", what, type(exc).__name__)
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        await asyncio.sleep(interval)


async def in_turns(items: Iterable[T], fn: Callable[[T], R], budget: float = TURN_BUDGET) -> list[R]:
    """`fn` over `items`, on the loop, with a turn of it after every `budget` seconds of work.

    For work that is short per item but long in all: the JSON of a 500-video
    answer (~10 ms), learning its titles, the entries of a feed. In a thread it
    would hold the GIL against the loop; cut into turns, nothing waits long.
    The cut is by time, not by count: a fixed count of 100 videos was 2 ms on
    one machine and 9 ms on a slower one. Drawing from `items` counts as work
    too, so a generator (a template's chunks) is cut the same way.
    """
    out = []
    turn = Turn(budget)
    for item in items:
        out.append(fn(item))
        if turn.due():
            await turn.end()
    return out


class Turn:
    """The loop's time for one piece of work, given back after every `budget` seconds of it:
    `if turn.due(): await turn.end()` in each pass. `in_turns` is one user; a loop of awaits that
    never suspend (an in-memory cache answers at once) is the other: draining 1,000 deferred
    lookups without it held the soak's loop for 51 ms."""

    __slots__ = ("_budget", "_ends")

    def __init__(self, budget: float = TURN_BUDGET) -> None:
        self._budget = budget
        self._ends = time.perf_counter() + budget

    def due(self) -> bool:
        return time.perf_counter() >= self._ends

    async def end(self) -> None:
        """Let the loop run what waits, then start a new budget."""
        await asyncio.sleep(0)
        self._ends = time.perf_counter() + self._budget


async def off_loop(large: bool, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` in a thread when its input is large, on the loop otherwise.

    A last resort, for work that cannot be cut into turns of the loop (merging
    thousands of videos). Threads share the GIL: the interpreter hands it back
    every 5 ms (`sys.getswitchinterval`), but a loop that sends and receives
    while a thread computes waits up to that long at every socket call, so a
    thread is dearer to the loop than it looks. Work that can be split (the
    answers' JSON lines, `answers._encode`) yields between chunks instead.
    `fn` must touch no state the loop mutates.
    """
    if large:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


class Pacer:
    """At most so many admissions per `interval` seconds, across the whole process.

    Hundreds of upstream requests started in one turn of the loop are answered
    in one burst, and the loop then handles every response in one turn: 256
    duration answers landing together held it ~140 ms. Started at a steady pace,
    they land at that pace, and no turn of the loop handles more than a batch.

    The batch adapts to what the loop can take (additive increase,
    multiplicative decrease): when a full window's successor opens late, the loop
    is saturated (new connections, TLS handshakes, a slower machine) and the
    batch halves; when it opens on time, the batch grows by one, up to `most`.
    """

    def __init__(self, most: int, interval: float, least: int = 4) -> None:
        self.most = most
        self.least = least
        self.interval = interval
        self.allowance = max(least, most // 2)  # a cold start opens connections: begin below the most
        self._window_start = float("-inf")
        self._admitted = 0
        # Who waits for a later window, first come first served. One timer lets the
        # next batch in: with every waiter sleeping and retrying on its own, all of
        # them woke at each window (500 lookups: ~400 wake-ups per 10 ms, in one turn).
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def admit(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiters and self._take(loop.time()):
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if self._timer is None:
            self._timer = loop.call_at(self._window_start + self.interval, self._release, loop)
        await waiter

    def _take(self, now: float) -> bool:
        """One admission in the current window, opening a new one when it is due."""
        due = self._window_start + self.interval
        if now >= due:
            if self._admitted >= self.allowance:  # a full window: was its successor on time?
                late = now - due
                if late > self.interval / 2:
                    self.allowance = max(self.least, self.allowance // 2)
                elif self.allowance < self.most:
                    self.allowance += 1
            self._window_start, self._admitted = now, 0
        if self._admitted < self.allowance:
            self._admitted += 1
            return True
        return False

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._waiters:
            if self._waiters[0].done():  # cancelled while it waited: no admission spent
                self._waiters.popleft()
                continue
            if not self._take(now):
                break
            self._waiters.popleft().set_result(None)
        if self._waiters:
            self._timer = loop.call_at(self._window_start + self.interval, self._release, loop)
