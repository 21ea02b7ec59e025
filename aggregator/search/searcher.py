"""Asking every organisation at once and merging what comes back.

Each org is one task; the whole search has one deadline (`upstream.deadline`),
and each org gets only the time that remains of it, as SearXNG bounds a
search. An org that is slow, failing, rate-limited or broken costs its own
results and nothing else: even an unexpected exception in its task makes it
`error`, never the answer a 500. Its `OrgReport` says what happened (the
`Server-Timing` metric `org-<id>`). Where each org's answer comes from (cache,
a shared fetch, a stale copy) is `answers`'s job.

`Searcher` is what the web layer talks to: `search`, `suggest`, `thumbnail`,
`health`, `latency` and `last_error` are its public surface, and
`run_background` does the work no request waits for (deferred duration lookups).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from aggregator.config import Config, Org
from aggregator.ilos.breaker import Breakers, BreakerState
from aggregator.ilos.budget import Budget, BudgetState, Spend
from aggregator.ilos.durations import DurationLookups
from aggregator.loop.deadlines import within
from aggregator.loop.turns import in_turns, repeat
from aggregator.metrics import Metrics
from aggregator.model import OrgReport, OrgStatus, Result, Sort, Video
from aggregator.search.answers import TIMED_OUT, AnswerSource, OrgAnswer, healed
from aggregator.search.popularity import Popularity
from aggregator.search.rank import Ranker
from aggregator.search.suggestions import SuggestionIndex
from aggregator.search.thumbnails import Redirect, Thumbnails

log = logging.getLogger(__name__)
DRAIN_INTERVAL = 0.5
LATENCY_WINDOW = 300.0  # seconds of answers /status summarises
LATENCY_SAMPLES = 2000  # per org, at most


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    results: tuple[Result, ...]
    reports: tuple[OrgReport, ...]
    # Epoch seconds: when the first of the org answers goes stale, or sooner (`incomplete_ttl`)
    # while a video of those shown waits for its duration.
    fresh_until: float
    shown: int | None = None  # how many of the first results a page shows (None: all)
    deadline: float = float("inf")  # time.monotonic() by which the caller is to be answered

    @property
    def complete(self) -> bool:
        return all(r.status.good for r in self.reports)

    @property
    def pending_durations(self) -> int:
        """Videos shown whose duration is still being looked up."""
        return sum(1 for r in self.results[: self.shown] if r.video.duration_pending)


@dataclass(frozen=True, slots=True)
class OrgHealth:
    """What /readyz says about an org: its last report here, its breaker and its budget."""

    report: OrgReport | None
    breaker: BreakerState
    budget: BudgetState
    deferred: int  # duration lookups waiting for budget


class Searcher:
    def __init__(
        self,
        config: Config,
        answers: AnswerSource,
        breakers: Breakers,
        budget: Budget,
        durations: DurationLookups,
        thumbnails: Thumbnails,
        suggestions: SuggestionIndex,
        ranker: Ranker,
        popularity: Popularity,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._answers = answers
        self._breakers = breakers
        self._budget = budget
        self._durations = durations
        self._thumbnails = thumbnails
        self._suggestions = suggestions
        self._ranker = ranker
        self._popularity = popularity
        self._last_reports: dict[str, OrgReport] = {}
        self._last_errors: dict[str, str] = {}  # safe to show: statuses and details never carry keys
        self._latency: dict[str, deque[tuple[float, float]]] = {}  # org -> (monotonic time, ms)

    async def search(
        self, query: str, org_ids: Sequence[str], sort: Sort, caller: str = "", shown: int | None = None
    ) -> SearchAnswer:
        """`query` is normalised (lower-cased, whitespace folded): it is what orgs are asked.

        `caller` names who asked (a client, or a digest of an address), so a past
        query is suggested only once enough different callers have made it. `shown`:
        how many of the first merged results the page shows, whose durations are looked
        up now (None: all of them, as a duration filter needs).
        """
        # Everything a search waits for is inside its deadline, Redis included: a stalled Redis
        # costs a search the deadline at most (then ResilientCache answers from memory).
        deadline = time.monotonic() + self.config.upstream.deadline
        orgs = [o for o in self.config.orgs if o.id in org_ids]
        # A query asked before goes first when a key's window binds (`ilos.budget`); unknown in
        # time, it is taken as asked before (Redis's trouble must not cost the caller its place).
        asked = await within(deadline, self._popularity.asked(query), 2)
        spend = Spend.SEARCH if asked > 1 else Spend.ONE_OFF
        timed = await asyncio.gather(*(self._timed(org, query, deadline, spend) for org in orgs))
        answers = [(org.id, answer) for org, (answer, _) in zip(orgs, timed, strict=True)]
        lists = [(org_id, answer.videos) for org_id, answer in answers]
        merged = await self._ranker.order(query, lists, sort)
        merged = await within(deadline, self._with_durations(merged, shown, deadline, answers), merged)
        # A turn of the loop between merging and learning: together, for one 500-video
        # answer, they were one of the longest steps left in the soak (docs/benchmarks.md).
        await asyncio.sleep(0)
        reports = tuple(report for _, report in timed)
        for report in reports:
            self._last_reports[report.org_id] = report
            self._latency.setdefault(report.org_id, deque(maxlen=LATENCY_SAMPLES)).append(
                (time.monotonic(), report.elapsed_ms)
            )
            if not report.status.good and report.status is not OrgStatus.STALE:
                self._last_errors[report.org_id] = (
                    f"{report.status}: {report.detail}" if report.detail else report.status
                )
            self.metrics.org_answers.labels(report.org_id, report.status).inc()
            self.metrics.org_seconds.labels(report.org_id).observe(report.elapsed_ms / 1000)
        await self._learn(query, answers, caller)
        fresh_until = min((answer.fresh_until for _, answer in answers if answer.fresh_until), default=0.0)
        answer = SearchAnswer(tuple(merged), reports, fresh_until, shown, deadline)
        if answer.pending_durations and fresh_until:
            # Looked at again soon: by then the lookups behind it have landed.
            incomplete = self._answers.clock() + self.config.cache.incomplete_ttl
            answer = replace(answer, fresh_until=min(fresh_until, incomplete))
        return answer

    def suggest(self, prefix: str, visible_orgs: Iterable[str]) -> list[str]:
        return self._suggestions.suggest(prefix, visible_orgs)

    async def thumbnail(self, randtag: str, orgs: Sequence[str]) -> Redirect | None:
        return await self._thumbnails.redirect(randtag, orgs)

    def latency(self, org_id: str, window: float = LATENCY_WINDOW) -> tuple[float, float] | None:
        """(p50, p95) milliseconds of this process's answers for the org in the last `window` s."""
        since = time.monotonic() - window
        samples = sorted(ms for at, ms in self._latency.get(org_id, ()) if at >= since)
        if not samples:
            return None
        return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.95))]

    def last_error(self, org_id: str) -> str | None:
        return self._last_errors.get(org_id)

    async def health(self) -> dict[str, OrgHealth]:
        """Each org's breaker and budget (fleet-wide, from the cache) and its last report here."""
        out = {}
        for org in self.config.orgs:
            out[org.id] = OrgHealth(
                self._last_reports.get(org.id),
                await self._breakers.state(org.id),
                await self._budget.state(org),
                await self._durations.pending(org),
            )
        return out

    async def refresh_ahead(
        self, query: str, org_ids: Sequence[str], lead: float, forced_since: float | None = None
    ) -> tuple[bool, float]:
        """Keep one polled search fresh in each of its orgs: (whether any answer was fetched
        again, when to look again). See `AnswerSource.refresh_ahead`."""
        refreshed, next_at = False, float("inf")
        for org in self.config.orgs:
            if org.id not in org_ids:
                continue
            outcome, at = await self._answers.refresh_ahead(org, query, lead, forced_since)
            self.metrics.refreshes.labels(org.id, outcome).inc()
            refreshed |= outcome == "refreshed"
            next_at = min(next_at, at)
        return refreshed, next_at

    async def look_up_duration(self, org_id: str, randtag: str) -> None:
        """Start a duration lookup for one new video (an upload webhook's) if the budget allows it now.

        Spent as a refresh: within `refresh_share`, after every lookup of an answer being served,
        and never queued; the video's duration is looked up with its answer otherwise."""
        org = self.config.org(org_id)
        if org is not None:
            await self._durations.resolve(org, [randtag], 0.0, Spend.REFRESH, defer=False)

    async def run_background(self) -> None:
        """Until cancelled: run deferred duration lookups as the budget refills (one process at a time).

        Cancelled at shutdown, it stops the searches and lookups still under way too."""
        try:
            await repeat(self._durations.drain_deferred, DRAIN_INTERVAL, "deferred duration lookups")
        finally:
            await asyncio.gather(self._answers.stop(), self._durations.stop())

    async def _timed(
        self, org: Org, query: str, deadline: float, spend: Spend
    ) -> tuple[OrgAnswer, OrgReport]:
        started = time.perf_counter()
        try:
            answer = await within(
                deadline, self._answers.answer(org, query, deadline - time.monotonic(), spend), TIMED_OUT
            )
        except Exception as exc:  # one org's bug is that org's error, never the whole answer's
            # No traceback: its frames' text could carry an upstream URL, and so a key.
            log.error("org=%s: unexpected %s while answering", org.id, type(exc).__name__)
            answer = OrgAnswer((), OrgStatus.ERROR, detail="unexpected error")
        elapsed = (time.perf_counter() - started) * 1000
        return answer, OrgReport(org.id, answer.status, elapsed, answer.detail)

    async def _with_durations(
        self, merged: list[Result], shown: int | None, deadline: float, answers: list[tuple[str, OrgAnswer]]
    ) -> list[Result]:
        """The merged results with the durations of the first `shown` looked up, within what is left of
        the deadline and `duration_wait`, each by the first org that returned it. Those of the rest of
        a freshly fetched answer are deferred (`Spend.DEFERRED`): what no page shows costs no request
        before what pages show."""
        wanted: dict[str, list[str]] = {}
        for result in merged[:shown]:
            if result.video.duration_pending:
                wanted.setdefault(result.orgs[0], []).append(result.video.randtag)
        looked_up = {tag for tags in wanted.values() for tag in tags}
        rest: list[tuple[Org, list[str]]] = []
        for org_id, answer in answers:
            org = self.config.org(org_id)
            if answer.status is OrgStatus.OK and org is not None:
                tags = [v.randtag for v in answer.videos if v.duration_pending and v.randtag not in looked_up]
                if tags:
                    rest.append((org, tags))
        await asyncio.gather(*(self._durations.defer(org, tags) for org, tags in rest))
        orgs = [
            (org, tags) for org_id, tags in wanted.items() if (org := self.config.org(org_id)) is not None
        ]
        if not orgs:
            return merged
        wait = max(0.0, min(self.config.upstream.duration_wait, deadline - time.monotonic()))
        found: dict[str, int | None] = {}
        for durations in await asyncio.gather(
            *(self._durations.resolve(org, tags, wait) for org, tags in orgs)
        ):
            found.update(durations)
        if not found:
            return merged
        return [
            replace(r, video=video) if (video := healed(found, r.video)) is not r.video else r for r in merged
        ]

    async def _learn(self, query: str, answers: list[tuple[str, OrgAnswer]], caller: str) -> None:
        """Feed the suggestions (titles, and the query itself where it found something) and the
        shared term statistics (`termstats`: each video counted once per process).

        On the loop (the index is the loop's), in turns: one pass over the videos for both.
        """
        found_by = [org_id for org_id, answer in answers if answer.videos]
        if found_by:
            self._suggestions.add_query(query, found_by, caller)

        def learn(org_video: tuple[str, Video]) -> None:
            org_id, video = org_video
            self._suggestions.add_title(video.title, (org_id,))
            self._ranker.learn(video)

        await in_turns([(org_id, v) for org_id, answer in answers for v in answer.videos], learn)
