"""Moving windows whose units are held until a full window after their request ended.

An upstream that counts requests over a rolling window counts each one when it
*arrives*. A unit stamped when it is taken leaves our window while the request
may still be on its way (paced, waiting for a pooled connection, crossing the
network), so the upstream's window would still hold requests ours has forgotten.
Here a unit is held from when it is taken until a full window after its
request's answer or timeout (`release`), which is never before the upstream lets
it go, whatever the latency. A unit never released (its process died) expires a
window after the longest a request can take (`hold`).

Shared through Redis: one sorted set per key, a member per unit, scored by when
it expires, changed only by the Lua scripts below, so every process of every
replica counts one window. The keys sit under their own fixed, versioned prefix
(`PREFIX`), not the cache's namespace: replicas of two releases share one window
during a rollout.

Redis faults do not hand out requests: each process keeps the window as it last
saw it, and while Redis is away counts that (plus its own units) as still there
until each expires, and its own share of the figure besides. When Redis answers
again, what the process knows is written back; a Redis that came back empty gets
the window back from the first process that knew it. Fewer requests while Redis
is away is the price.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from aggregator.config import CacheConfig
from aggregator.model import Clock
from aggregator.store.redis_cache import redis_client, redis_failed

log = logging.getLogger(__name__)
PREFIX = "ilosagg-budget:v1:"  # versioned on its own: a cache namespace bump must not split windows
REFUSAL_MEMORY = 1.0  # seconds a window found full is taken as full without asking Redis, at most

# KEYS[1]: the window. ARGV: now, limit, keep, want, expiry of new units, member prefix,
# known (units the caller knows unexpired), then member/expiry pairs to write back (NX).
# Returns {granted, members and expiries of the window after}; granted is -1 when the window
# is gone although the caller knows units in it (Redis lost it): call again with them.
_TAKE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', key) == 0 and tonumber(ARGV[7]) > 0 and #ARGV == 7 then
  return {-1, {}}
end
for i = 8, #ARGV, 2 do
  redis.call('ZADD', key, 'NX', ARGV[i + 1], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local used = redis.call('ZCARD', key)
local granted = math.min(tonumber(ARGV[4]), tonumber(ARGV[2]) - tonumber(ARGV[3]) - used)
if granted < 0 then granted = 0 end
for g = 1, granted do
  redis.call('ZADD', key, ARGV[5], ARGV[6] .. g)
end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIRE', key, math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
end
return {granted, redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')}
"""

# KEYS[1]: the window. ARGV: now, expiry, members. Re-dates the units still in the window.
_RELEASE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('ZADD', key, 'XX', ARGV[2], ARGV[i])
end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIRE', key, math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Figures:
    """How a window stands: its limit, how much of it is free, and what holds the rest."""

    limit: int
    remaining: int
    held: Mapping[str, int] = field(default_factory=dict)  # kind (as `take` was told) -> units


class HeldWindows:
    """`limit` is the shared figure; `share` what one process may use while it counts alone."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster | None,
        retry_seconds: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._token = secrets.token_hex(6)
        self._counter = itertools.count(1)
        self._seen: dict[str, dict[str, float]] = {}  # key -> member -> expiry: the window as last seen
        self._refused: dict[str, tuple[float, int]] = {}  # key -> (until, headroom): no room (`_refuse`)
        self._down_until = 0.0
        self._write_back = False  # Redis failed since it last answered: give it what we know
        # Until then, after an outage or a Redis that lost its windows, this process keeps to its
        # share even with Redis back: the others may not have written their units back yet.
        self._cautious_until = 0.0

    async def take(
        self,
        key: str,
        limit: int,
        share: int,
        want: int,
        window: float,
        hold: float,
        keep: int = 0,
        kind: str = "",
    ) -> list[str]:
        """Up to `want` units that leave `keep` free; the members taken (none when there is no room).

        Each is held until `release`, or `window + hold` seconds from now at the latest. `kind`
        (letters and dashes) says what they were for, in `figures`.
        """
        if want <= 0:
            return []
        now = self._clock()
        refused = self._refused.get(key)
        if refused is not None and now < refused[0] and limit - keep <= refused[1]:
            return []  # no room a moment ago, and none can have come since (see `_refuse`)
        prefix = f"{self._token}:{next(self._counter)}:{kind}:"
        expiry = now + window + hold
        if self._redis_now():
            if now < self._cautious_until:
                want = min(want, self._room_in_share(key, limit, share, keep, now))
            try:
                return await self._take_shared(key, limit, share, keep, want, expiry, prefix, now, window)
            except Exception as exc:
                if not redis_failed(exc):
                    raise
                self._failed(exc)
        return self._take_alone(key, limit, share, keep, want, expiry, prefix, now)

    async def release(self, key: str, members: Sequence[str], window: float) -> None:
        """The requests of these units have ended: each is held one more window from now, then freed."""
        if not members:
            return
        now = self._clock()
        expiry = now + window
        seen = self._seen.setdefault(key, {})
        for member in members:
            if member in seen:
                seen[member] = min(seen[member], expiry)
        refused = self._refused.get(key)
        if refused is not None and refused[0] > expiry:
            self._refused[key] = (expiry, refused[1])
        if self._redis_now():
            try:
                await cast(Any, self._client).eval(
                    _RELEASE, 1, PREFIX + key, repr(now), repr(expiry), *members
                )
            except Exception as exc:
                if not redis_failed(exc):
                    raise
                self._failed(exc)

    async def charge(self, key: str, cost: int, window: float) -> None:
        """Count `cost` more units for a window from now, room or not (the upstream says it saw them)."""
        unlimited = 1 << 30
        taken = await self.take(key, unlimited, unlimited, cost, window, 0.0, kind="upstream")
        await self.release(key, taken, window)

    async def figures(self, key: str, limit: int, share: int) -> Figures:
        """How the window stands; counting alone, the figure in force is this process's share."""
        now = self._clock()
        alone = True
        if self._redis_now():
            try:
                await self._take_shared(key, limit, share, 0, 0, now, "-", now, 0.0)  # takes nothing: a read
                alone = False
            except Exception as exc:
                if not redis_failed(exc):
                    raise
                self._failed(exc)
        live = self._live(key, now)
        used = len(live)
        held = Counter(_kind(member) for member in live)
        if alone:
            room = max(0, min(limit - used, self._room_in_share(key, limit, share, 0, now)))
            return Figures(share, room, dict(held))
        return Figures(limit, max(0, limit - used), dict(held))

    # -- the shared count ------------------------------------------------------------

    async def _take_shared(
        self,
        key: str,
        limit: int,
        share: int,
        keep: int,
        want: int,
        expiry: float,
        prefix: str,
        now: float,
        window: float,
    ) -> list[str]:
        client = cast(Any, self._client)
        known = self._live(key, now)
        args: list[Any] = [repr(now), limit, keep, want, repr(expiry), prefix, len(known)]
        what_we_know = [x for member, at in known.items() for x in (member, repr(at))]
        if self._write_back:
            args += what_we_know
        reply = await client.eval(_TAKE, 1, PREFIX + key, *args)
        if int(reply[0]) == -1:  # Redis lost the window: give it back what we know, then take
            log.warning("upstream budget: Redis had lost a key's window; writing back what this process knew")
            self._cautious_until = now + window
            args[3] = min(want, self._room_in_share(key, limit, share, keep, now))
            reply = await client.eval(_TAKE, 1, PREFIX + key, *args, *what_we_know)
        if self._write_back:
            log.warning("upstream budget: Redis answers again; this process's window was written back")
            self._write_back = False
            self._cautious_until = now + window
        granted, flat = int(reply[0]), reply[1]
        units = {}
        for i in range(0, len(flat), 2):
            member = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
            units[member] = float(flat[i + 1])
        self._seen[key] = units
        if granted < want:
            self._refuse(key, limit - keep, now, units)
        return [f"{prefix}{g}" for g in range(1, granted + 1)]

    def _refuse(self, key: str, headroom: int, now: float, units: Mapping[str, float]) -> None:
        """Remember that the window had no room below `headroom` (a take's limit less what it must
        leave): until its first unit expires, no take with as little headroom or less finds any
        (units are only ever added or kept longer, by any process, except by this process's own
        `release`, which it sees). A take with more headroom (a repeated search after a one-off one, a charge)
        still asks. At most `REFUSAL_MEMORY`: another process's release may free a unit early.
        At a campus's peak, refused takes were a sixth of the service's CPU, each a script
        returning the whole window."""
        first = min((at for at in units.values() if at > now), default=now)
        self._refused[key] = (min(first, now + REFUSAL_MEMORY), headroom)

    def _redis_now(self) -> bool:
        return self._client is not None and self._clock() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._write_back = True
        if self._clock() < self._down_until:
            return
        # A full Redis (maxmemory) refuses the window's writes: counted alone the same way, but it
        # is not down, and the log says so.
        state = "full" if isinstance(exc, OutOfMemoryError) else "unreachable"
        log.warning(
            "upstream budget: Redis %s (%s): counting the last window seen, and this process's share",
            state,
            type(exc).__name__,
        )
        self._down_until = self._clock() + self._retry_seconds

    # -- counting alone ------------------------------------------------------------------

    def _take_alone(
        self, key: str, limit: int, share: int, keep: int, want: int, expiry: float, prefix: str, now: float
    ) -> list[str]:
        """Without Redis: what was last seen still counts until it expires, and this process may use
        its `share` at most (with the same proportion kept free)."""
        seen = self._live(key, now)
        granted = max(
            0, min(want, limit - keep - len(seen), self._room_in_share(key, limit, share, keep, now))
        )
        members = [f"{prefix}{g}" for g in range(1, granted + 1)]
        for member in members:
            seen[member] = expiry
        return members

    def _room_in_share(self, key: str, limit: int, share: int, keep: int, now: float) -> int:
        """What this process may still take of its own share (leaving the same proportion free)."""
        own = sum(1 for m in self._live(key, now) if m.startswith(self._token))
        keep_share = keep * share // limit if limit else 0
        return max(0, share - keep_share - own)

    def _live(self, key: str, now: float) -> dict[str, float]:
        seen = self._seen.setdefault(key, {})
        for member in [m for m, at in seen.items() if at <= now]:
            del seen[member]
        return seen


def _kind(member: str) -> str:
    """What a unit was taken for: the third part of its name (`take`'s prefix)."""
    parts = member.split(":")
    return parts[2] if len(parts) > 3 and parts[2] else "other"


@asynccontextmanager
async def held_windows(config: CacheConfig, clock: Clock = time.time) -> AsyncIterator[HeldWindows]:
    """The windows on the configured Redis (a client of their own), or counted alone without one."""
    if not config.redis_url:
        yield HeldWindows(None, config.redis_retry_seconds, clock)
        return
    client = redis_client(config)
    try:
        yield HeldWindows(client, config.redis_retry_seconds, clock)
    finally:
        await client.aclose()
