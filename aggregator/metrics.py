"""Prometheus metrics at /metrics (prometheus-client: exposition format and histograms done right).

One registry per app, so several apps in one process (tests) do not collide.
Labels are org ids, formats and outcome names: never a query, key or token.
With `serve --workers N` each process has its own figures; scrape each, or
run one worker per container.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.org_answers = Counter("ilosagg_org_answers", "Org answers used in searches, by status "
                                   "(ok, cached, stale, timeout, error, skipped, denied)",
                                   ["org", "status"], registry=r)
        self.org_seconds = Histogram("ilosagg_org_answer_seconds", "Time to have an org's answer",
                                     ["org"], registry=r,
                                     buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8))
        self.upstream = Counter("ilosagg_upstream_requests", "Requests sent to ilos, by outcome",
                                ["org", "endpoint", "outcome"], registry=r)
        self.pages = Counter("ilosagg_pages", "Search pages served, by format and whether the "
                             "rendered page was reused", ["format", "source"], registry=r)
        self.redis_up = Gauge("ilosagg_redis_up", "1 while Redis answers, 0 while the in-process "
                              "cache stands in (absent without Redis)", registry=r)
        self._page_children: dict[tuple[str, str], Counter] = {}

    def page(self, fmt: str, source: str) -> None:
        """Counted on the warm path, so the labelled child is looked up once."""
        child = self._page_children.get((fmt, source))
        if child is None:
            child = self._page_children[(fmt, source)] = self.pages.labels(fmt, source)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
