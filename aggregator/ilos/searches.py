"""One search at ilos for one org, behind the org's breaker and budget, parsed off the loop.

Before asking: the breaker (`skipped` while open; one probe when its cool-down
ends) and one request from the org's budget (`skipped` when there is none).
After: what ilos said of the budget goes to `Budget.believe`, what a failure
says of the org goes to its breaker, and a good body is parsed in a worker
process. Every ending is an `Asked`, never an exception; caching the answer and
looking up its durations is the search layer's job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from aggregator.config import Config, Org
from aggregator.ilos.breaker import Breakers, Decision
from aggregator.ilos.budget import Budget, Spend
from aggregator.ilos.client import Fetched, Outcome, fetch_search
from aggregator.ilos.parsepool import ParseFailed, ParsePool, WorkerLost
from aggregator.metrics import Metrics
from aggregator.model import OrgStatus, Video

log = logging.getLogger(__name__)

_STATUS_OF = {Outcome.OK: OrgStatus.OK, Outcome.TIMEOUT: OrgStatus.TIMEOUT, Outcome.DENIED: OrgStatus.DENIED}
# What says an org is down (and counts towards its breaker), as against a bad answer or a full budget.
_DOWN = (Outcome.TIMEOUT, Outcome.NETWORK)


@dataclass(frozen=True, slots=True)
class Asked:
    status: OrgStatus  # OK, or why there are no videos
    videos: tuple[Video, ...] = ()
    detail: str = ""  # safe to log and show: never a key or upstream text
    lines: bytes = b""  # the videos as the parse worker encoded them, one JSON line each


class OrgSearches:
    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        parse_pool: ParsePool,
        breakers: Breakers,
        budget: Budget,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self._session = session
        self._parse_pool = parse_pool
        self._breakers = breakers
        self._budget = budget
        self._metrics = metrics

    async def ask(self, org: Org, query: str, spend: Spend) -> Asked:
        """`query` is normalised; `spend` says whose budget share the request comes from."""
        decision, probe = await self._breakers.decide(org.id)
        if decision is Decision.SKIP:
            return Asked(OrgStatus.SKIPPED, detail="cooling down after failures")
        grant = await self._budget.take(org, spend)
        if grant is None:
            self._metrics.budget_refused.labels(org.id, spend.value).inc()
            if probe is not None:
                await self._breakers.succeeded(org.id, probe)  # no verdict: let another request probe
            return Asked(OrgStatus.SKIPPED, detail="no request budget left")
        try:
            fetched = await fetch_search(self._session, org, query, self.config.upstream)
        finally:
            await self._budget.done(grant)  # held one more window from its answer, as ilos counts it
        self._metrics.upstream.labels(org.id, "search", fetched.outcome.value).inc()
        self._metrics.upstream_seconds.labels(org.id, "search").observe(fetched.elapsed_ms / 1000)
        await self._budget.believe(org, fetched.rate_remaining, fetched.retry_after)
        if not fetched.ok:
            await self._judge(org, fetched, probe)
            log.warning("search failed: org=%s outcome=%s %s", org.id, fetched.outcome.value, fetched.detail)
            status = _STATUS_OF.get(fetched.outcome, OrgStatus.ERROR)
            if fetched.outcome is Outcome.RATE_LIMITED:
                status = OrgStatus.SKIPPED
            return Asked(status, detail=fetched.detail)
        await self._breakers.succeeded(org.id, probe)
        try:
            parsed = await self._parse_pool.parse(fetched.body, self.config.upstream.max_items)
        except (WorkerLost, OSError) as exc:  # no worker could be had: not the answer's fault
            log.error("search failed: org=%s: no parse worker (%s)", org.id, type(exc).__name__)
            return Asked(OrgStatus.ERROR, detail="the answer could not be parsed here")
        except Exception as exc:  # UnparseableAnswer, or anything feedparser trips on
            kind = str(exc) if isinstance(exc, ParseFailed) else type(exc).__name__
            log.warning("search failed: org=%s outcome=unparseable (%s)", org.id, kind)
            return Asked(OrgStatus.ERROR, detail="answer is not RSS or Atom")
        return Asked(OrgStatus.OK, parsed.videos, lines=parsed.lines)

    async def _judge(self, org: Org, fetched: Fetched, probe: bytes | None) -> None:
        """Tell the breaker what a failed search says about the org."""
        if fetched.outcome is Outcome.DENIED:
            log.error(
                "org=%s: ilos refused the org's API key (%s); skipping it for 10 min", org.id, fetched.detail
            )
            await self._breakers.failed(org.id, "key refused", denied=True, probe=probe)
        elif fetched.outcome in _DOWN or (
            fetched.outcome is Outcome.HTTP_ERROR and (fetched.status or 0) >= 500
        ):
            await self._breakers.failed(org.id, fetched.detail or fetched.outcome.value, probe=probe)
        elif probe is not None:
            await self._breakers.succeeded(org.id, probe)  # it answered: not down
