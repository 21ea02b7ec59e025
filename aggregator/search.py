"""Asking every organisation at once and merging what comes back.

Each org is one task with its own timeouts; an org that is slow, failing or
rate-limited costs its own results and nothing else, and its `OrgReport` says
what happened (it becomes the `Server-Timing` metric `org-<id>`). Where each
org's answer comes from (cache, a shared fetch, a stale copy) is `answers`'s job.

`Searcher` is what the web layer talks to: `search`, `suggest`, `thumbnail`
and `reports` are its whole public surface.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiohttp

from aggregator.answers import AnswerSource, OrgAnswer
from aggregator.cache import Cache
from aggregator.config import Config, Org
from aggregator.merge import merge
from aggregator.metrics import Metrics
from aggregator.model import Clock, OrgReport, Result, Sort
from aggregator.parsepool import ParsePool
from aggregator.suggestions import SuggestionIndex
from aggregator.thumbnails import Redirect, Thumbnails


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    results: tuple[Result, ...]
    reports: tuple[OrgReport, ...]
    fresh_until: float  # epoch seconds: when the first of the org answers goes stale

    @property
    def complete(self) -> bool:
        return all(r.status.good for r in self.reports)


class Searcher:
    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        cache: Cache,
        parse_pool: ParsePool,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._answers = AnswerSource(config, session, cache, parse_pool, self.metrics, clock)
        self._thumbnails = Thumbnails(cache, self._answers.refresh, clock)
        self._last_reports: dict[str, OrgReport] = {}
        self._suggestions = SuggestionIndex()

    async def search(self, query: str, org_ids: Sequence[str], sort: Sort) -> SearchAnswer:
        """`query` is normalised (lower-cased, whitespace folded): it is what orgs are asked."""
        orgs = [o for o in self.config.orgs if o.id in org_ids]
        timed = await asyncio.gather(*(self._timed(org, query) for org in orgs))
        answers = [(org.id, answer) for org, (answer, _) in zip(orgs, timed, strict=True)]
        merged = merge([(org_id, answer.videos) for org_id, answer in answers], sort)
        reports = tuple(report for _, report in timed)
        for report in reports:
            self._last_reports[report.org_id] = report
            self.metrics.org_answers.labels(report.org_id, report.status).inc()
            self.metrics.org_seconds.labels(report.org_id).observe(report.elapsed_ms / 1000)
        self._learn(query, answers)
        fresh = [answer.fresh_until for _, answer in answers if answer.fresh_until]
        return SearchAnswer(tuple(merged), reports, min(fresh, default=0.0))

    def suggest(self, prefix: str, visible_orgs: Iterable[str]) -> list[str]:
        return self._suggestions.suggest(prefix, visible_orgs)

    async def thumbnail(self, randtag: str) -> Redirect | None:
        return await self._thumbnails.redirect(randtag)

    def reports(self) -> dict[str, OrgReport]:
        """Each org's last report in this process, for /readyz."""
        return dict(self._last_reports)

    async def _timed(self, org: Org, query: str) -> tuple[OrgAnswer, OrgReport]:
        started = time.perf_counter()
        answer = await self._answers.answer(org, query)
        elapsed = (time.perf_counter() - started) * 1000
        return answer, OrgReport(org.id, answer.status, elapsed, answer.detail)

    def _learn(self, query: str, answers: list[tuple[str, OrgAnswer]]) -> None:
        """Feed the suggestions: titles, and the query itself where it found something."""
        found_by = [org_id for org_id, answer in answers if answer.videos]
        if found_by:
            self._suggestions.add(query, found_by)
        for org_id, answer in answers:
            for video in answer.videos:
                self._suggestions.add(video.title, (org_id,))
