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
import logging
import multiprocessing
from concurrent.futures.process import BrokenProcessPool

from aggregator.model import Video
from aggregator.parsing import parse_search_answer

log = logging.getLogger(__name__)
_EMPTY_FEED = b"<rss version='2.0'><channel/></rss>"


class ParsePool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.Executor:
        if self.workers <= 0:
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parse")
        # spawn, not fork: forking a process that runs an event loop and sockets is unsafe.
        context = multiprocessing.get_context("spawn")
        executor = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        # Start the workers and import the parsers now, not on the first user's search.
        for _ in range(self.workers):
            executor.submit(parse_search_answer, _EMPTY_FEED)
        return executor

    async def parse(self, body: bytes, max_items: int | None = None) -> list[Video]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, parse_search_answer, body, max_items)
        except BrokenProcessPool:
            log.error("a parse worker died: starting new ones")
            broken, self._executor = self._executor, self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)
            return await loop.run_in_executor(self._executor, parse_search_answer, body, max_items)

    def shutdown(self) -> None:
        """Blocking: call it from a thread. Waiting lets the workers exit before the interpreter does."""
        self._executor.shutdown(wait=True, cancel_futures=True)
