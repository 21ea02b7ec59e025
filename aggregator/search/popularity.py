"""How often each query has been asked lately, by anyone of any process: who a tight budget serves.

When an org key's window binds, a request spent on a query nobody asks again is
one that a query many people ask cannot have. So a search tells the budget
whether its query is *repeated* (asked before, lately) or *one-off*, and one-off
searches leave `upstream.one_off_reserve` of each window to the rest
(`ilos.budget.Spend`). A polled feed is asked again at every poll, so it is
repeated from its second poll on.

Counted by query digest (`store.keys.query_digest`), never the text, in a Redis
hash per period (half of `suggest.retention`): a query's count is its count in
this period and the one before, so it is forgotten between one and two half
retentions after it was last asked. Bounded: a period counts at most
`MAX_QUERIES` digests (past that, only those it has grow); a period's hash
expires a period after it ends.
"""

from __future__ import annotations

import time

from aggregator.model import Clock
from aggregator.store import keys
from aggregator.store.cache import Cache

MAX_QUERIES = 50_000  # digests a period counts, at most: about 4 MB of Redis


class Popularity:
    def __init__(self, cache: Cache, retention_days: float, clock: Clock = time.time) -> None:
        self._cache = cache
        self._clock = clock
        self._period = max(60.0, retention_days * 86_400 / 2)

    async def asked(self, query: str) -> int:
        """Count one more asking of `query` (normalised); how many times it was asked lately, this one included."""
        period = int(self._clock() // self._period)
        digest = keys.query_digest(query)
        return await self._cache.tally(_key(period), digest, _key(period - 1), MAX_QUERIES, self._period * 2)


def _key(period: int) -> str:
    # One hash slot for every period ({popular}), so the two periods can be read in one step on a Cluster.
    return keys.key("{popular}", str(period))
