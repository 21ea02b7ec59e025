"""Where feedparser runs: worker processes beside the event loop (or one thread).

Parsing is CPU work and the loop must not wait on it, so answers are parsed
in a process pool that uses the other cores. A worker that dies (killed for
memory, say) breaks a `ProcessPoolExecutor` for good; `ParsePool` then starts
a new one and tries once more, so one lost process is not a service that
fails every search until it is restarted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool

from aggregator.eventloop import in_turns
from aggregator.model import Video
from aggregator.parsing import parse_search_answer

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_EMPTY_FEED = b"<rss version='2.0'><channel/></rss>"


PARSE_NICENESS = 10  # parse workers yield a shared core to the serving loop


def _start_worker() -> None:
    """In each parse worker, first: a lower CPU priority, and no life beyond the parent's.

    Parsing is the service's bulk work and the event loop its latency: on a
    busy machine the kernel should run the loop first, so a cached page is
    never late because a cold answer is being parsed (`os.nice`, CFS weights).
    """
    with contextlib.suppress(OSError):
        os.nice(PARSE_NICENESS)
    _die_with_parent()


def _die_with_parent() -> None:
    """End when the process that started it ends, however it ends.

    A serving process killed outright (SIGKILL, the OOM killer) cannot shut its
    pool down; on Linux the kernel then sends its parse workers SIGTERM
    (PR_SET_PDEATHSIG), so none is left behind holding memory and descriptors.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent was already gone before prctl took effect
        os._exit(0)


def _parse_to_lines(body: bytes, max_items: int | None) -> bytes:
    """In the worker: parse, and hand back one JSON line per video.

    Not the Video objects themselves: the pool's manager thread would unpickle
    500 of them while holding the GIL, and the loop, which needs the GIL at
    every socket call, would wait. One bytes object crosses for free, and the
    loop reads it a hundred videos per turn (`eventloop.in_turns`).
    """
    return b"\n".join(v.to_line() for v in parse_search_answer(body, max_items))


class ParsePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.Executor:
        if self.workers <= 0:
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parse")
        # spawn, not fork: forking a process that runs an event loop and sockets is unsafe.
        context = multiprocessing.get_context("spawn")
        executor = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start_worker
        )
        # Start the workers and import the parsers now, not on the first user's search.
        for _ in range(self.workers):
            executor.submit(parse_search_answer, _EMPTY_FEED)
        return executor

    async def parse(self, body: bytes, max_items: int | None = None) -> list[Video]:
        loop = asyncio.get_running_loop()
        try:
            lines = await loop.run_in_executor(self._executor, _parse_to_lines, body, max_items)
        except BrokenProcessPool:
            log.error("a parse worker died: starting new ones")
            broken, self._executor = self._executor, self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)
            lines = await loop.run_in_executor(self._executor, _parse_to_lines, body, max_items)
        return await in_turns(lines.split(b"\n") if lines else [], Video.from_line)

    def shutdown(self) -> None:
        """Blocking: call it from a thread. Waiting lets the workers exit before the interpreter does."""
        self._executor.shutdown(wait=True, cancel_futures=True)
