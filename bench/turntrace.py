"""Run the service with a per-turn timer: which steps of the event loop were long, and why.

    python -m bench.turntrace OUT.json -- serve --config ...
    python -m bench.soak --queries 600 --trace OUT.json      # the same, under the soak

A diagnostic launcher, not part of the service. It records, in the loop
thread's own CPU time (`time.thread_time`, so waiting for a core is left out):

- every callback (`asyncio.Handle._run`) of 10 ms or more, named by where its
  task resumed and where it suspended (the service's frames on the await chain);
- every iteration of the loop (`_run_once`) of 20 ms or more, with the
  callbacks that made it up: a timer is late by the whole iteration, and 500
  small steps can be as long as one big one;
- every garbage collection of 3 ms or more (`gc.callbacks`), with what a full
  collection still walks.

On exit it all goes to OUT as JSON. Environment switches, each off by default
except the first:

- `TURNTRACE_LIGHT=1`: none of the above; for each iteration of 15 ms or more
  outside `select`, how much of it was the loop's CPU, waiting for a core, and
  waiting for anything else, with its callbacks of 1 ms or more and the
  collections inside it (`install_light`): cheap enough that what it finds
  long is long without it;
- `TURNTRACE_SAMPLE=0`: no watchdog thread sampling the loop thread's stack
  during a long callback (the sampling itself takes the GIL every 2 ms);
- `TURNTRACE_GARBAGE=1`: the types of what full collections find as garbage;
- `TURNTRACE_GC_PROBE=1`: a full collection from a thread every 5 s, timed (the
  thread's id goes to /tmp/turntrace-probe.tid, for `perf record -t`);
- `TURNTRACE_LEAK=1`: every 30 s, thaw the frozen heap and count the cycles in it
  (not together with `TURNTRACE_GARBAGE`, which takes the garbage first).

Its clocks cost a few microseconds a callback, so absolute figures run high;
compare runs under it with each other, and take the service's own lag metrics
from runs without it.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import gc
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

THRESHOLD = 0.010  # seconds of one callback worth a record
SAMPLE_EVERY = 0.002


def _suspended_at(task: Any) -> str:
    """Where a task's coroutine waits: the service's frames along its await chain, outermost first."""
    coro = task.get_coro()
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if "/aggregator/" in frame.f_code.co_filename:
            frames.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-3:])


class Trace:
    def __init__(self) -> None:
        self.current: tuple[int, float] | None = None  # (serial, start) of the callback running now
        self.serial = 0
        self.sampled: dict[int, list[str]] = {}
        self.steps: list[dict[str, Any]] = []
        self.gcs: list[tuple[int, float]] = []
        self._gc_start = 0.0
        self.gc_details: list[tuple[int, float, int]] = []
        self.gen2_census: list[tuple[Any, ...]] = []  # (objects, by type, largest containers, ms)
        self.iteration: list[tuple[float, str]] = []
        self.iterations: list[dict[str, Any]] = []
        self.leaks: list[tuple[int, list[tuple[str, int]]]] = []
        self.probes: list[tuple[int, float]] = []
        self.garbage_census: list[tuple[int, list[tuple[str, int]]]] = []
        self.main_ident = threading.get_ident()
        # With TURNTRACE_GARBAGE the collector keeps what it frees (DEBUG_SAVEALL); each
        # collection's is counted and let go here. Without it gc.garbage is left alone,
        # for the leak probe to read.
        self.census_garbage = False
        self.full_collections = 0

    def watchdog(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY)
            cur = self.current
            if cur is None:
                continue
            serial, start = cur
            if serial in self.sampled or time.perf_counter() - start < THRESHOLD / 2:
                continue
            frame = sys._current_frames().get(self.main_ident)
            if frame is not None:
                stack = traceback.format_stack(frame, limit=12)
                self.sampled[serial] = [line.strip().replace("\n", " | ") for line in stack]

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            took = time.thread_time() - self._gc_start
            self.gcs.append((info["generation"], took))
            if took > 0.003:
                self.gc_details.append((info["generation"], round(took * 1000, 2), info["collected"]))
            if self.census_garbage:
                if len(gc.garbage) > 300 and len(self.garbage_census) < 20:
                    self.garbage_census.append(
                        (
                            info["generation"],
                            collections.Counter(type(o).__name__ for o in gc.garbage).most_common(12),
                        )
                    )
                gc.garbage.clear()
            # Only once the start-up heap is frozen: before, a full collection walks the imports.
            # Every fifth full collection, the last twelve kept: the heap late in a run, not at its start.
            if info["generation"] == 2 and gc.get_freeze_count():
                self.full_collections += 1
                if self.full_collections % 5 == 1:
                    objs = gc.get_objects(2)
                    census = collections.Counter(type(o).__name__ for o in objs)
                    largest = sorted(
                        (o for o in objs if isinstance(o, dict | list | set | tuple)), key=len, reverse=True
                    )[:8]
                    sized = [(len(o), type(o).__name__, repr(o)[:80]) for o in largest]  # the repr says whose
                    self.gen2_census.append(
                        (sum(census.values()), census.most_common(12), sized, took * 1000)
                    )
                    del self.gen2_census[:-12]

    def dump(self, path: str) -> None:
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for step in self.steps:
            groups[step["where"]].append(step["cpu_ms"])
        summary = sorted(
            (
                {"where": k, "n": len(v), "max_cpu_ms": max(v), "sum_cpu_ms": sum(v)}
                for k, v in groups.items()
            ),
            key=lambda g: -g["sum_cpu_ms"],
        )
        tracked = collections.Counter(type(o).__name__ for o in gc.get_objects())
        with open(path, "w") as f:
            json.dump(
                {
                    "groups": summary,
                    "steps": self.steps[-300:],
                    "gcs_over_3ms": self.gc_details,
                    "gen2_census": self.gen2_census,
                    "garbage_census": self.garbage_census,
                    "probes": self.probes,
                    "leaks": self.leaks,
                    "long_iterations": self.iterations[-200:],
                    "gcs": {g: len([1 for gg, _ in self.gcs if gg == g]) for g in range(3)},
                    "tracked_at_exit": tracked.most_common(25),
                    "frozen": gc.get_freeze_count(),
                },
                f,
                indent=1,
            )


def install(out: str) -> None:
    trace = Trace()
    original = asyncio.events.Handle._run

    def timed_run(handle: asyncio.events.Handle) -> None:
        trace.serial += 1
        serial = trace.serial
        task = getattr(handle._callback, "__self__", None)
        resumed = _suspended_at(task) if isinstance(task, asyncio.Task) else ""
        start, cpu_start = time.perf_counter(), time.thread_time()
        trace.current = (serial, start)
        try:
            original(handle)
        finally:
            trace.current = None
            took, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
            if cpu >= 0.0005:
                label = (f"{resumed} -> {_suspended_at(task)}" if resumed else repr(handle))[:160]
                trace.iteration.append((cpu, label))
            if cpu >= THRESHOLD:
                what = repr(handle)[:200]
                if resumed:
                    what = f"{resumed} -> {_suspended_at(task)}"
                stack = trace.sampled.pop(serial, [])
                where = " <- ".join(reversed(stack[-4:])) if stack else what
                trace.steps.append(
                    {
                        "cpu_ms": round(cpu * 1000, 2),
                        "ms": round(took * 1000, 2),
                        "what": what,
                        "where": where[:600],
                    }
                )
            else:
                trace.sampled.pop(serial, None)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    original_once = asyncio.base_events.BaseEventLoop._run_once

    def timed_once(loop: asyncio.base_events.BaseEventLoop) -> None:
        trace.iteration = []
        cpu_start = time.thread_time()
        original_once(loop)  # type: ignore[attr-defined]
        cpu = time.thread_time() - cpu_start
        if cpu >= 0.02:
            groups: collections.Counter[str] = collections.Counter()
            counts: collections.Counter[str] = collections.Counter()
            for c, label in trace.iteration:
                groups[label] += c
                counts[label] += 1
            trace.iterations.append(
                {
                    "cpu_ms": round(cpu * 1000, 2),
                    "handles_over_half_ms": len(trace.iteration),
                    "top": [(round(c * 1000, 2), counts[k], k) for k, c in groups.most_common(6)],
                }
            )

    asyncio.base_events.BaseEventLoop._run_once = timed_once  # type: ignore[attr-defined]
    gc.callbacks.append(trace.on_gc)
    if os.environ.get("TURNTRACE_GARBAGE") == "1":
        trace.census_garbage = True
        gc.set_debug(gc.DEBUG_SAVEALL)
    if os.environ.get("TURNTRACE_GC_PROBE") == "1":

        def probe() -> None:
            with open("/tmp/turntrace-probe.tid", "w") as f:
                f.write(str(threading.get_native_id()))
            while True:
                time.sleep(5)
                n = len(gc.get_objects())
                started = time.thread_time()
                gc.collect(2)
                took = round((time.thread_time() - started) * 1000, 2)
                trace.probes.append((n, took))

        threading.Thread(target=probe, daemon=True).start()
    if os.environ.get("TURNTRACE_LEAK") == "1":

        def leak_probe() -> None:
            """Every 30 s: collect, then thaw and collect again; the second finds frozen cycles."""
            while True:
                time.sleep(30)
                gc.collect()
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.unfreeze()
                gc.collect()
                gc.set_debug(0)
                census = collections.Counter(type(o).__name__ for o in gc.garbage)
                trace.leaks.append((len(gc.garbage), census.most_common(10)))
                gc.garbage.clear()
                gc.freeze()  # as the service left it: what is alive stays out of later walks

        threading.Thread(target=leak_probe, daemon=True).start()
    if os.environ.get("TURNTRACE_SAMPLE", "1") != "0":
        threading.Thread(target=trace.watchdog, daemon=True).start()
    atexit.register(trace.dump, out)


def install_light(out: str) -> None:
    """`TURNTRACE_LIGHT=1`: what an iteration of the loop spent its time on, cheaply.

    The full trace names every task step before it runs and reads two clocks
    per callback, which makes most steps look long. This one reads one clock
    per callback, and per iteration the loop thread's CPU time and run delay
    (waiting for a core, `/proc/thread-self/schedstat`) and how long `select`
    waited. For each iteration whose time outside `select` is 15 ms or more it
    keeps that split, its callbacks of 1 ms or more and the collections inside
    it; what is neither CPU nor run delay is the thread waiting on something
    else: the GIL, held by another thread, or the kernel.
    """
    import selectors

    long_iterations: list[dict[str, Any]] = []
    current: list[tuple[float, str]] = []
    collections_now: list[tuple[int, float]] = []
    gc_started = [0.0]
    selected = [0.0]
    clock = time.perf_counter
    schedstat = open("/proc/thread-self/schedstat", "rb", buffering=0)  # noqa: SIM115 (kept open)

    def run_delay() -> float:
        schedstat.seek(0)
        return int(schedstat.read().split()[1]) / 1e9

    original_select = selectors.EpollSelector.select

    def timed_select(self: selectors.EpollSelector, timeout: float | None = None) -> Any:
        start = clock()
        try:
            return original_select(self, timeout)
        finally:
            selected[0] += clock() - start

    original = asyncio.events.Handle._run

    def timed_run(handle: asyncio.events.Handle) -> None:
        start = clock()
        original(handle)
        took = clock() - start
        if took >= 0.001:
            task = getattr(handle._callback, "__self__", None)
            label = f"-> {_suspended_at(task) or 'done'}" if isinstance(task, asyncio.Task) else repr(handle)
            current.append((round(took * 1000, 2), label[:200]))

    original_once = asyncio.base_events.BaseEventLoop._run_once

    def timed_once(loop: asyncio.base_events.BaseEventLoop) -> None:
        current.clear()
        collections_now.clear()
        selected[0] = 0.0
        start, cpu, delay = clock(), time.thread_time(), run_delay()
        start_monotonic = time.monotonic()
        original_once(loop)  # type: ignore[attr-defined]
        wall = clock() - start - selected[0]
        if wall >= 0.015:
            cpu = time.thread_time() - cpu
            delay = run_delay() - delay
            long_iterations.append(
                {
                    "at": round(start_monotonic, 3),  # time.monotonic(): comparable across processes
                    "ms": round(wall * 1000, 2),
                    "cpu_ms": round(cpu * 1000, 2),
                    "run_delay_ms": round(delay * 1000, 2),
                    "other_ms": round((wall - cpu - delay) * 1000, 2),
                    "callbacks": list(current),
                    "collections": list(collections_now),
                }
            )

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            collections_now.append(
                (info["generation"], round((time.thread_time() - gc_started[0]) * 1000, 2))
            )

    def dump() -> None:
        with open(out, "w") as f:
            json.dump({"long_iterations": long_iterations}, f, indent=1)

    selectors.EpollSelector.select = timed_select  # type: ignore[method-assign]
    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop._run_once = timed_once  # type: ignore[attr-defined]
    gc.callbacks.append(on_gc)
    atexit.register(dump)


if __name__ == "__main__":
    out, sep, *rest = sys.argv[1:]
    assert sep == "--", "usage: python -m bench.turntrace OUT.json -- serve --config ..."
    if os.environ.get("TURNTRACE_LIGHT") == "1":
        install_light(out)
    else:
        install(out)
    from aggregator.cli import main

    code = main(rest)
    sys.exit(code)
