"""The cache every process reads: bytes under namespaced keys, each with a TTL.

`MemoryCache` is the in-process backend (bounded, least recently used goes
first). Keys are built only by `key()`, so they are namespaced and versioned
and never hold an org key or client token: callers pass ids, randtags and
hashed queries, nothing else.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Protocol

NAMESPACE = "ilosagg:v1"


def key(kind: str, *parts: str) -> str:
    return ":".join((NAMESPACE, kind, *parts))


def query_digest(text: str) -> str:
    """A short stable digest, so user text never becomes a raw key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...


class MemoryCache:
    """An in-process cache bounded in entries; expired and least recently used entries go first."""

    def __init__(self, max_entries: int = 10_000, clock=time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get_now(self, key: str) -> bytes | None:
        """Synchronous read, for hot paths that must not yield to the loop."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set_now(self, key: str, value: bytes, ttl: float) -> None:
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get_now(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_now(key, value, ttl)

    async def set_many(self, items: Iterable[tuple[str, bytes]], ttl: float) -> None:
        for k, v in items:
            self.set_now(k, v, ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        if self.get_now(key) is not None:
            return False
        self.set_now(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
