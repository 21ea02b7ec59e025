"""How late the event loop runs, and how much of that is our own work.

`time_iterations` measures how long the loop's own work holds it, and `watch`
what that costs a timer.

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEDSTAT = Path("/proc/thread-self/schedstat")


INTERVAL = 0.05


ITERATION_FLOOR = 0.001  # iterations with less of the loop's CPU than this are not observed


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
    is wrapped: one clock read an iteration (~0.5 us). The selector is a private
    attribute (`_selector`, there since Python 3.4); a loop without one (uvloop, which
    the service never uses) is left alone and nothing is observed. Several apps on one loop (tests)
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
        called_at = [thread_time()]  # the loop thread's CPU time when `select` was last called

        def timed_select(timeout: float | None = None) -> Any:
            # One clock read an iteration: from one call to the next is the iteration plus the
            # previous `select` itself, whose CPU (microseconds; none while it waits) is noise
            # beside the millisecond floor. Under load a read was a tenth of a request's syscalls.
            now = thread_time()
            used, called_at[0] = now - called_at[0], now
            if used >= ITERATION_FLOOR:
                for each in observers:
                    each(used)
            return select(timeout)

        selector.select = timed_select
    observers.append(observe)
    return functools.partial(_forget, observers, observe)


def _forget(observers: list[Callable[[float], None]], observe: Callable[[float], None]) -> None:
    if observe in observers:
        observers.remove(observe)
