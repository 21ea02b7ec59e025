"""Prometheus metrics at /metrics (prometheus-client: exposition format and histograms done right).

One registry per app, so several apps in one process (tests) do not collide.
Labels are org ids, formats and outcome names: never a query, key or token.

With `serve --workers N` (gunicorn) the workers write their figures to
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode), and a
scrape of any worker reports the totals of all of them.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METRICS_TYPE = CONTENT_TYPE_LATEST
APP_KEY_NAME = "metrics"
PAGES_HELP = "Search pages served, by format and whether the rendered page was reused"
REQUESTS_HELP = "Requests answered, by route, format and status"
REQUEST_SECONDS_HELP = "Time to answer a request, by route"
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BOUNDS = [repr(b) for b in REQUEST_BUCKETS] + ["+Inf"]  # as prometheus-client writes `le`


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class LoopTick(Protocol):
    """One late timer of the lag watch (`loop.lag.Tick`): seconds late, busy, and the loop's own CPU."""

    @property
    def lag(self) -> float: ...
    @property
    def busy(self) -> float: ...
    @property
    def cpu(self) -> float: ...


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_mode()
        r = self.registry = CollectorRegistry()
        self.org_answers = Counter(
            "ilosagg_org_answers",
            "Org answers used in searches, by status (ok, cached, stale, timeout, error, skipped, denied)",
            ["org", "status"],
            registry=r,
        )
        self.org_seconds = Histogram(
            "ilosagg_org_answer_seconds",
            "Time to have an org's answer",
            ["org"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 4, 8),
        )
        self.refreshes = Counter(
            "ilosagg_refreshes",
            "Polled feeds' org answers looked at ahead of expiry, by outcome (fresh, refreshed, failed, later)",
            ["org", "outcome"],
            registry=r,
        )
        self.webhooks = Counter(
            "ilosagg_webhooks",
            "Upload webhooks received, by outcome (accepted, refused, too_large, bad_json)",
            ["outcome"],
            registry=r,
        )
        self.websub_pings = Counter(
            "ilosagg_websub_pings",
            "Publish pings sent to the WebSub hub, by outcome",
            ["outcome"],
            registry=r,
        )
        self.deferred = Counter(
            "ilosagg_durations_deferred",
            "Duration lookups deferred for want of budget or by a passing failure",
            ["org"],
            registry=r,
        )
        self.budget_refused = Counter(
            "ilosagg_budget_refused",
            "Upstream requests not sent because the org's budget had none left",
            ["org", "spend"],
            registry=r,
        )
        self.upstream = Counter(
            "ilosagg_upstream_requests",
            "Requests sent to ilos, by outcome",
            ["org", "endpoint", "outcome"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "ilosagg_cache_lookups",
            "Cache lookups by layer (answer, duration) and result (hit, miss, stale)",
            ["layer", "result"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "ilosagg_breaker_open",
            "1 while an org's breaker is open (fleet-wide, read at scrape time)",
            ["org"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.budget_remaining = Gauge(
            "ilosagg_budget_remaining",
            "Requests left in an org key's current window (read at scrape time)",
            ["org"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.redis_full_refusals = Gauge(
            "ilosagg_redis_full_refusals",
            "Writes Redis refused because it was full (maxmemory), since this process started (read at scrape time)",
            registry=r,
            multiprocess_mode="sum",
        )
        self.formats_by_route: dict[str, str] = {}  # route path -> format name, for the requests family
        # Requests are counted on the warm path too: plain tallies read out at scrape time, as pages
        # are (a labelled counter and histogram took a third of a cached page's own work); with
        # several processes, real ones, which write where every worker's scrape reads.
        self._routes: dict[str, RouteRequests] = {}
        self._requests_counter: Counter | None = None
        self._request_seconds: Histogram | None = None
        if self.multiprocess:
            self._requests_counter = Counter(
                "ilosagg_requests", REQUESTS_HELP, ["route", "format", "status"], registry=r
            )
            self._request_seconds = Histogram(
                "ilosagg_request_seconds",
                REQUEST_SECONDS_HELP,
                ["route"],
                registry=r,
                buckets=REQUEST_BUCKETS,
            )
        else:
            r.register(_RequestsCollector(self))
        self.upstream_seconds = Histogram(
            "ilosagg_upstream_request_seconds",
            "Time of requests to ilos, by org and endpoint",
            ["org", "endpoint"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
        )
        self.caller_rejected = Counter(
            "ilosagg_caller_rejections",
            "Requests answered 429 because the caller (client or address) was over its limit",
            ["caller"],
            registry=r,
        )
        # Pages are counted on the warm path: a plain tally, read out at scrape time; with
        # several processes, a real counter, which writes where every worker's scrape reads.
        self._pages: dict[tuple[str, str], _Count] = {}
        self._pages_counter: Counter | None = None
        if self.multiprocess:
            self._pages_counter = Counter("ilosagg_pages", PAGES_HELP, ["format", "source"], registry=r)
        else:
            r.register(_PagesCollector(self._pages))
        self.loop_lag = _LoopFigure(
            r,
            "lag",
            "How late a 50 ms timer fires, whatever the reason",
            "The latest a 50 ms timer has fired since the process started",
        )
        self.loop_busy = _LoopFigure(
            r,
            "busy",
            "Of a timer's lateness, the part the loop itself was busy (not waiting for a CPU)",
            "The longest the loop itself has held up a timer since the process started",
        )
        self.loop_cpu = _LoopFigure(
            r,
            "cpu",
            "Of a timer's busy lateness, at most the loop thread's own CPU time (not steal, GIL or blocking)",
            "The longest the loop's own CPU work can have held up a timer since the process started",
        )
        self.loop_iteration_cpu = _LoopFigure(
            r,
            "iteration_cpu",
            "The loop thread's CPU time in one iteration of the loop (all it ran between two waits "
            "for I/O), for iterations of 1 ms or more: how long the service's own work held the loop",
            "The most CPU one iteration of the loop has taken since the process started",
        )
        self.redis_up = Gauge(
            "ilosagg_redis_up",
            "1 while Redis answers, 0 while the in-process cache stands in (absent without Redis)",
            registry=r,
            multiprocess_mode="min",
        )

    def loop_tick(self, tick: LoopTick) -> None:
        self.loop_lag.observe(tick.lag)
        self.loop_busy.observe(tick.busy)
        self.loop_cpu.observe(tick.cpu)

    def route(self, route: str) -> RouteRequests:
        """Where a route's answered requests are counted (by the access logger, which aiohttp calls
        for each): looked up once by whoever counts many."""
        found = self._routes.get(route)
        if found is None:
            if self._requests_counter is None or self._request_seconds is None:
                found = _RouteTally(route)
            else:
                fmt = self.formats_by_route.get(route, "-")
                found = _RouteChildren(route, self._requests_counter, self._request_seconds, fmt)
            self._routes[route] = found
        return found

    def page(self, fmt: str, source: str) -> None:
        """`source`: "rendered", or "reused" from the page cache."""
        self.page_counter(fmt, source)()

    def page_counter(self, fmt: str, source: str) -> Callable[[], None]:
        """Adds one to the pages of `fmt` from `source`: looked up once by the warm path."""
        if self._pages_counter is not None:
            inc: Callable[[], None] = self._pages_counter.labels(fmt, source).inc
            return inc
        count = self._pages.get((fmt, source))
        if count is None:
            count = self._pages[(fmt, source)] = _Count()
        return count.add

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()  # every worker's figures, summed, from the shared directory
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus-client
        return generate_latest(registry)


class _Count:
    """A tally of one label set, read out at scrape time."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def add(self) -> None:
        self.n += 1


class _PagesCollector:
    def __init__(self, counts: dict[tuple[str, str], _Count]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ilosagg_pages",
            PAGES_HELP,
            labels=["format", "source"],
        )
        for (fmt, source), count in sorted(self.counts.items()):
            family.add_metric([fmt, source], count.n)
        yield family


class RouteRequests(Protocol):
    """One route's answered requests: by status, and their times."""

    name: str

    def observe(self, status: int, seconds: float) -> None: ...


class _RouteTally:
    """A route's requests in one process: plain tallies, read out at scrape time."""

    __slots__ = ("by_status", "name", "times")

    def __init__(self, name: str) -> None:
        self.name = name
        self.by_status: dict[int, int] = {}
        # observations per bucket (the last is +Inf) and their sum, at the end
        self.times = [0.0] * (len(REQUEST_BUCKETS) + 2)

    def observe(self, status: int, seconds: float) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        times = self.times
        times[bisect_left(REQUEST_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        times[-1] += seconds


class _RouteChildren:
    """A route's requests with several processes: prometheus-client's children, each resolved once."""

    def __init__(self, name: str, counter: Counter, histogram: Histogram, fmt: str) -> None:
        self.name = name
        self._counter = counter
        self._format = fmt
        self._by_status: dict[int, Counter] = {}
        self._seconds = histogram.labels(name)

    def observe(self, status: int, seconds: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._counter.labels(self.name, self._format, str(status))
        child.inc()
        self._seconds.observe(seconds)


class _RequestsCollector:
    """`ilosagg_requests` and `ilosagg_request_seconds` from the routes' tallies, at scrape time,
    as prometheus-client would expose them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics  # its routes and formats_by_route, read at scrape time

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        routes = sorted(
            ((name, tally) for name, tally in self.metrics._routes.items() if isinstance(tally, _RouteTally)),
            key=lambda item: item[0],
        )
        answered = CounterMetricFamily(
            "ilosagg_requests", REQUESTS_HELP, labels=["route", "format", "status"]
        )
        for name, tally in routes:
            fmt = self.metrics.formats_by_route.get(name, "-")
            for status, n in sorted(tally.by_status.items()):
                answered.add_metric([name, fmt, str(status)], n)
        yield answered
        seconds = HistogramMetricFamily("ilosagg_request_seconds", REQUEST_SECONDS_HELP, labels=["route"])
        for name, tally in routes:
            times = tally.times
            cumulative = list(accumulate(times[:-1]))
            seconds.add_metric([name], list(zip(_BOUNDS, cumulative, strict=True)), sum_value=times[-1])
        yield seconds


METRICS = web.AppKey(APP_KEY_NAME, Metrics)  # the app's Metrics: web sets it, the access logger reads it


class _LoopFigure:
    """One figure of the lag watcher's ticks: a histogram, and the worst tick since start as a gauge."""

    BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5)

    def __init__(self, registry: CollectorRegistry, name: str, what: str, worst: str) -> None:
        self.seconds = Histogram(
            f"ilosagg_event_loop_{name}_seconds", what, registry=registry, buckets=self.BUCKETS
        )
        self.max = Gauge(
            f"ilosagg_event_loop_{name}_max_seconds", worst, registry=registry, multiprocess_mode="max"
        )
        self._worst = 0.0

    def observe(self, value: float) -> None:
        self.seconds.observe(value)
        if value > self._worst:
            self._worst = value
            self.max.set(value)
