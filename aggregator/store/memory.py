"""The in-process cache: bounded by bytes, least recently used goes first.

It serves alone where no Redis is configured, stands in while Redis is unreachable
(`resilient`), and holds each process's rendered pages.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aggregator.loop.turns import in_turns

ENTRY_OVERHEAD = 160  # bytes an entry costs beyond its key and value (tuple, dict slot, floats)


def approximate_size(value: Any) -> int:
    """Bytes a cached value holds, near enough to bound memory: exact for bytes, estimated otherwise."""
    if isinstance(value, bytes | bytearray | str):
        return len(value)
    nbytes = getattr(value, "nbytes", None)  # rendered pages say what they hold
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, dict):
        return sum(len(str(k)) + 64 for k in value)
    return 64


class MemoryCache:
    """In-process and bounded in bytes; expired and least recently used entries go first.

    Values are usually bytes, but any object can be kept (the rendered-page
    cache keeps whole responses); `approximate_size` weighs them.
    """

    def __init__(
        self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # what the entries weigh now
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def get_now(self, key: str) -> Any:
        """Synchronous read, for hot paths that must not yield to the loop."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value, size = item
        if expires <= self._clock():
            del self._data[key]
            self.bytes -= size
            return None
        self._data.move_to_end(key)
        return value

    def set_now(self, key: str, value: Any, ttl: float, weight: int | None = None) -> None:
        """`weight`: what `value` weighs, where the caller knows better than `approximate_size`."""
        size = len(key) + (approximate_size(value) if weight is None else weight) + ENTRY_OVERHEAD
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        if size > self.max_bytes:
            return  # larger than the whole cache: not kept at all
        self._data[key] = (self._clock() + ttl, value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, evicted) = self._data.popitem(last=False)
            self.bytes -= evicted

    async def get(self, key: str) -> Any:
        return self.get_now(key)

    async def get_many(self, keys: Sequence[str]) -> list[Any]:
        # In turns of the loop: the 500 durations of a cold answer took ~3 ms here, on top
        # of what came before them in the same step (bench.turntrace's light mode, soak).
        return await in_turns(keys, self.get_now)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.set_now(key, value, ttl)

    async def set_many(self, items: Iterable[tuple[str, Any]], ttl: float) -> None:
        await in_turns(items, lambda item: self.set_now(item[0], item[1], ttl))

    async def add(self, key: str, value: Any, ttl: float) -> bool:
        if self.get_now(key) is not None:
            return False
        self.set_now(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[2]

    async def delete_if(self, key: str, value: Any) -> bool:
        if self.get_now(key) != value:
            return False
        await self.delete(key)
        return True

    async def extend_if(self, key: str, value: Any, ttl: float) -> bool:
        if self.get_now(key) != value:
            return False
        self.set_now(key, value, ttl)
        return True

    async def incr(self, key: str, ttl: float) -> int:
        count = int(self.get_now(key) or 0) + 1
        self.set_now(key, count, ttl)
        return count

    async def enqueue(self, key: str, members: Sequence[str], ttl: float) -> None:
        queue = self.get_now(key)
        if not isinstance(queue, OrderedDict):
            queue = OrderedDict()
        for member in members:
            queue.setdefault(member, None)
        self.set_now(key, queue, ttl)

    async def dequeue(self, key: str, count: int) -> list[str]:
        queue = self.get_now(key)
        if not isinstance(queue, OrderedDict):
            return []
        return [queue.popitem(last=False)[0] for _ in range(min(count, len(queue)))]

    async def queue_size(self, key: str) -> int:
        queue = self.get_now(key)
        return len(queue) if isinstance(queue, OrderedDict) else 0

    async def schedule(self, key: str, members: Mapping[str, float], ttl: float) -> None:
        times = self.get_now(key)
        if isinstance(times, dict):
            # Weighed by what is added, not again in whole: a set of 20,000 subscriptions took
            # 1.6 ms to weigh on every new one.
            weight = self._data[key][2] - len(key) - ENTRY_OVERHEAD
        else:
            times, weight = {}, 0
        weight += sum(len(str(m)) + 64 for m in members if m not in times)
        times.update(members)
        self.set_now(key, times, ttl, weight)

    async def scheduled(self, key: str, until: float, count: int) -> list[tuple[str, float]]:
        times = self.get_now(key)
        if not isinstance(times, dict):
            return []
        due = ((m, t) for m, t in times.items() if t <= until)
        return heapq.nsmallest(count, due, key=lambda mt: (mt[1], mt[0]))

    async def schedule_size(self, key: str) -> int:
        times = self.get_now(key)
        return len(times) if isinstance(times, dict) else 0

    async def unschedule(self, key: str, members: Sequence[str]) -> None:
        times = self.get_now(key)
        if isinstance(times, dict):
            for member in members:
                times.pop(member, None)

    async def keep_latest(self, key: str, items: Sequence[bytes], keep: int, ttl: float) -> None:
        held = self.get_now(key)
        kept = [*reversed(items), *(held if isinstance(held, list) else ())][:keep]
        self.set_now(key, kept, ttl, sum(len(item) + 40 for item in kept))

    async def latest(self, key: str) -> list[bytes]:
        held = self.get_now(key)
        return list(held) if isinstance(held, list) else []

    async def add_counts(self, key: str, counts: Mapping[str, int], ttl: float) -> None:
        held = self.get_now(key)
        if not isinstance(held, dict):
            held = {}
        for name, n in counts.items():
            held[name] = held.get(name, 0) + n
        self.set_now(key, held, ttl)

    async def counts(self, key: str) -> dict[str, int]:
        held = self.get_now(key)
        return dict(held) if isinstance(held, dict) else {}

    async def tally(self, key: str, name: str, since: str, cap: int, ttl: float) -> int:
        held = self.get_now(key)
        if not isinstance(held, dict):
            held = {}
        if name in held or len(held) < cap:
            held[name] = held.get(name, 0) + 1
            self.set_now(key, held, ttl)
        before = self.get_now(since)
        earlier: int = before.get(name, 0) if isinstance(before, dict) else 0
        now: int = held.get(name, 0)
        return now + earlier

    def describe(self) -> str:
        return "memory"
