"""A circuit breaker per org, shared through the cache (contract: "Upstream budget and deadlines").

After `FAILURES_TO_OPEN` consecutive failures (timeouts, 5xx, network
errors), counted across processes, the org is skipped for a cool-down: 5 s,
doubling with each further failure, at most 5 min. When it ends, one request
fleet-wide (whoever takes the probe lock) asks again; success closes the
breaker, failure opens it for longer. A refused key (401/403) opens it for
10 min at once: asking again sooner only repeats the refusal.

State is decided from timestamps stored in the values against the injected
clock; cache TTLs only clean up.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import dataclass

from aggregator.model import Clock
from aggregator.store import keys as cache_keys
from aggregator.store.cache import Cache

FAILURES_TO_OPEN = 3
FIRST_COOL_DOWN = 5.0
MAX_COOL_DOWN = 300.0
DENIED_COOL_DOWN = 600.0
PROBE_HOLD = 30.0  # seconds a probe may take before another process may probe
FORGET = 3600.0  # a failure count older than this is forgotten


class Decision(enum.Enum):
    ASK = "ask"  # closed: ask as usual
    PROBE = "probe"  # the cool-down ended and this caller probes for everyone
    SKIP = "skip"  # open: do not ask


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: int
    open_until: float  # epoch seconds; 0 when closed
    reason: str  # why it opened, safe to show: "timeout", "HTTP 503", "key refused"

    def is_open(self, now: float) -> bool:
        return self.open_until > now

    def describe(self, now: float) -> str:
        """`open` (skipped), `half-open` (its cool-down is over: the next request probes) or `closed`."""
        if self.is_open(now):
            return "open"
        return "half-open" if self.open_until else "closed"


CLOSED = BreakerState(0, 0.0, "")


class Breakers:
    def __init__(self, cache: Cache, clock: Clock = time.time) -> None:
        self.cache = cache
        self.clock = clock

    async def decide(self, org_id: str) -> tuple[Decision, bytes | None]:
        """Whether to ask this org now; a probe comes with the token that releases it."""
        state = await self.state(org_id)
        if state.open_until == 0.0:
            return Decision.ASK, None
        if state.is_open(self.clock()):
            return Decision.SKIP, None
        token = secrets.token_hex(8).encode()
        if await self.cache.add(cache_keys.key("probe", org_id), token, PROBE_HOLD):
            return Decision.PROBE, token
        return Decision.SKIP, None

    async def succeeded(self, org_id: str, probe: bytes | None = None) -> None:
        """An answer came: the failures in a row are over (one GET when there were none)."""
        if probe is not None or await self.cache.get(cache_keys.key("breaker", org_id)) is not None:
            await self.cache.delete(cache_keys.key("failures", org_id))
            await self.cache.delete(cache_keys.key("breaker", org_id))
        if probe is not None:
            await self.cache.delete_if(cache_keys.key("probe", org_id), probe)

    async def failed(
        self, org_id: str, reason: str, *, denied: bool = False, probe: bytes | None = None
    ) -> None:
        """Count one failure; open the breaker when it is the third in a row (or the key was refused)."""
        failures = await self.cache.incr(cache_keys.key("failures", org_id), FORGET)
        now = self.clock()
        if denied:
            open_until = now + DENIED_COOL_DOWN
        elif failures >= FAILURES_TO_OPEN:
            open_until = now + min(MAX_COOL_DOWN, FIRST_COOL_DOWN * 2 ** (failures - FAILURES_TO_OPEN))
        else:
            open_until = 0.0
        state = {"failures": failures, "open_until": open_until, "reason": reason}
        await self.cache.set(cache_keys.key("breaker", org_id), json.dumps(state).encode(), FORGET)
        if probe is not None:
            await self.cache.delete_if(cache_keys.key("probe", org_id), probe)

    async def state(self, org_id: str) -> BreakerState:
        raw = await self.cache.get(cache_keys.key("breaker", org_id))
        if raw is None:
            return CLOSED
        try:
            doc = json.loads(raw)
            return BreakerState(int(doc["failures"]), float(doc["open_until"]), str(doc["reason"]))
        except (ValueError, KeyError, TypeError):
            return CLOSED
