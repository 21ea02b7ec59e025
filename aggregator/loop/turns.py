"""Keeping the event loop responsive: how late it runs, the collector kept off it, big work in a thread.

Every request shares one loop, so one long step delays them all. The tools:
`time_iterations` measures how long the loop's own work holds it, and `watch`
what that costs a timer; `settle_heap` keeps full garbage collections short
and `collect_in_own_turns` keeps them out of other steps; `in_turns` cuts
long work into turns; `off_loop` moves work that cannot be cut to a thread.

A 50 ms timer that fires late means every request waited that long too. The
lateness has two causes that call for different fixes:

- the loop itself was busy (a long step of ours: CPU work or a blocking call),
  which is a bug in this service;
- the loop's thread was ready to run but the kernel gave every core to
  something else (parse workers, another program), which is a matter of
  capacity.

Linux keeps, per thread, the time spent runnable but waiting for a CPU
(`run_delay`, the second field of `/proc/thread-self/schedstat`, see the
kernel's Documentation/scheduler/sched-stats.rst). The busy part of a late tick
is its lateness less the run delay accrued in the same interval. Where the file
is missing, the busy part is taken to be the whole lateness.

Busy still counts every other reason the thread did not run: a blocking call,
the GIL held by another thread, and on a virtual machine the host running
something else on our core (steal time, which the guest's clocks count as
neither). So each tick also carries the loop thread's own CPU time since the
last tick: the part of the lateness that was this service's CPU work is at
most that (`Tick.cpu`).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
TURN_BUDGET = 0.002  # seconds of work between turns of the loop in `in_turns`
SCHEDSTAT = Path("/proc/thread-self/schedstat")
INTERVAL = 0.05
ITERATION_FLOOR = 0.001  # iterations with less of the loop's CPU than this are not observed
FULL_COLLECTION_EVERY = 1.0  # seconds between full collections at most, under load
NEVER = 2**31 - 1  # a generation threshold no count reaches
_collecting_tasks = 0  # how many `collect_in_own_turns` run in this process (apps in tests: several)
_oldest_threshold = 10  # CPython's own, kept while they run


@dataclass(frozen=True, slots=True)
class Tick:
    lag: float  # how late the timer fired, in seconds
    busy: float  # of that, the time the loop was not waiting for a core
    cpu: float = 0.0  # of that, at most the loop thread's CPU time since the last tick


def run_delay_reader() -> Callable[[], float] | None:
    """A reader of the calling thread's run delay in seconds, or None where the kernel has none."""
    try:
        # One open file, re-read from the start: a read costs a few microseconds.
        handle = SCHEDSTAT.open("rb", buffering=0)
        handle.read()
    except OSError:
        return None

    def read() -> float:
        handle.seek(0)
        return int(handle.read().split()[1]) / 1e9

    return read


async def watch(observe: Callable[[Tick], None], interval: float = INTERVAL) -> None:
    """Runs until cancelled, calling `observe` once per timer tick."""
    loop = asyncio.get_running_loop()
    run_delay = run_delay_reader()
    waited = run_delay() if run_delay else 0.0
    used = time.thread_time()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - expected)
        if run_delay:
            now_waited = run_delay()
            waited, delay = now_waited, now_waited - waited
            busy = max(0.0, lag - delay)
        else:
            busy = lag
        now_used = time.thread_time()
        used, cpu = now_used, now_used - used
        observe(Tick(lag, busy, min(busy, cpu)))


def time_iterations(observe: Callable[[float], None]) -> Callable[[], None]:
    """Until the returned function is called: `observe(cpu)` for every iteration of the running
    loop in which the loop thread spent `ITERATION_FLOOR` seconds of CPU or more.

    This is the stall itself: an iteration is everything the loop runs between
    two waits for I/O, and nothing else is served until it ends. The 50 ms
    timer (`watch`) sees it only as lateness, mixed with waits for a core and,
    on a virtual machine, with the host not running the guest (steal), even
    while the loop sat idle in `select`; the thread's CPU time counts neither.

    asyncio has no hook for an iteration, but every iteration of a selector
    loop begins and ends with one call to its selector's `select`, so that call
    is wrapped: two clock reads an iteration (~1 us). The selector is a private
    attribute (`_selector`, there since Python 3.4); a loop without one (uvloop)
    is left alone and nothing is observed. Several apps on one loop (tests)
    share one wrapper.
    """
    selector = getattr(asyncio.get_running_loop(), "_selector", None)
    if selector is None or not hasattr(selector, "select"):
        return lambda: None
    observers: list[Callable[[float], None]] | None = getattr(selector, "_iteration_observers", None)
    if observers is None:
        observers = []
        selector._iteration_observers = observers
        select = selector.select
        thread_time = time.thread_time
        left_at = [thread_time()]  # the loop thread's CPU time when `select` last returned

        def timed_select(timeout: float | None = None) -> Any:
            used = thread_time() - left_at[0]
            if used >= ITERATION_FLOOR:
                for each in observers:
                    each(used)
            try:
                return select(timeout)
            finally:
                left_at[0] = thread_time()

        selector.select = timed_select
    observers.append(observe)
    return functools.partial(_forget, observers, observe)


def _forget(observers: list[Callable[[float], None]], observe: Callable[[float], None]) -> None:
    if observe in observers:
        observers.remove(observe)


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
    clock = time.perf_counter
    out = []
    turn_ends = clock() + budget
    for item in items:
        out.append(fn(item))
        if clock() >= turn_ends:
            await asyncio.sleep(0)
            turn_ends = clock() + budget
    return out


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
