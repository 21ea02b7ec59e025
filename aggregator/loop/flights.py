"""Single flight within one process: many callers, one task per key.

The task runs on its own: a caller that stops waiting (its deadline passed,
its client went away) does not cancel it for the others, and work started for
one request can finish in the background. Across processes the same idea is a
Redis lock (answers) or a lease (durations).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = logging.getLogger(__name__)
STOP_WAIT = 2.0  # seconds shutdown waits for cancelled flights to end


class Flights(Generic[K, V]):
    def __init__(self, name: str) -> None:
        self.name = name  # for the log line of a flight that failed unexpectedly
        self._tasks: dict[K, asyncio.Task[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> asyncio.Task[V]:
        """The task under way for `key`, started from `work()` if there is none."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._landed(key, t))
        return task

    async def join(self, key: K, work: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """Wait for the flight's result; cancelling this wait leaves the flight running."""
        return await asyncio.shield(self.start(key, work))

    async def stop(self) -> None:
        """Cancel every flight and wait for them, at most `STOP_WAIT` seconds: at shutdown, before the
        session and the cache they use are closed under them (each then failed "unexpectedly")."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT)

    def _landed(self, key: K, task: asyncio.Task[V]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s flight failed unexpectedly (%s)", self.name, type(task.exception()).__name__)
