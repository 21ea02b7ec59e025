"""For operators: `/healthz`, `/readyz`, `/metrics` and the `/status` page.

`/readyz` and `/status` read each org's state from one function (`org_states`),
fleet-wide from the shared cache plus what this process saw last.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from aggregator.metrics import METRICS_TYPE
from aggregator.render.formats import HTML
from aggregator.render.page import render_status
from aggregator.store.cache import redis_unreachable
from aggregator.store.memory import MemoryCache
from aggregator.store.resilient import ResilientCache
from aggregator.web.auth import unauthorized
from aggregator.web.errors import NO_STORE
from aggregator.web.services import Services
from aggregator.web.state import CONFIG, PAGE_HEADERS, SERVICES


@dataclass(frozen=True, slots=True)
class OrgState:
    """One org as operators see it. Safe to show: statuses and details never carry keys."""

    id: str
    name: str
    last: str | None  # the status of its last answer in this process
    good: bool  # that status is a good one (or there was none yet)
    breaker: str  # "closed", "open" or "half-open"
    breaker_reason: str
    retry_in: float | None  # seconds until the open breaker lets a probe through
    failures: int
    budget_limit: int
    budget_remaining: int
    rate_limited_for: float | None  # seconds a 429's Retry-After still holds
    window_spent: tuple[tuple[str, int], ...]  # what holds the window, by kind (`ilos.budget.Spend`)
    deferred: int  # duration lookups waiting for budget
    latency: tuple[float, float] | None  # (p50, p95) ms in this process
    error: str | None  # the last error this process saw


async def org_states(services: Services) -> list[OrgState]:
    searcher, now = services.searcher, services.clock()
    healths = await searcher.health()  # one read of the shared state for every org
    states = []
    for org in services.config.orgs:
        health = healths[org.id]
        breaker = health.breaker.describe(now)
        last = health.report.status if health.report else None
        states.append(
            OrgState(
                id=org.id,
                name=org.name,
                last=str(last) if last else None,
                good=last is None or last.good,
                breaker=breaker,
                breaker_reason=health.breaker.reason,
                retry_in=round(health.breaker.open_until - now, 1) if breaker == "open" else None,
                failures=health.breaker.failures,
                budget_limit=health.budget.limit,
                budget_remaining=health.budget.remaining,
                rate_limited_for=round(max(0.0, health.budget.cooling_until - now), 1) or None,
                window_spent=tuple(sorted(health.budget.held.items(), key=lambda kv: (-kv[1], kv[0]))),
                deferred=health.deferred,
                latency=searcher.latency(org.id),
                error=searcher.last_error(org.id),
            )
        )
    return states


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """Can serve (200 whenever the process runs, as Kubernetes probes expect); says what is degraded.

    To anyone, in general terms ("2 of 5 organisations unavailable"); each org's state only to
    whoever may see `/status` (an open service's callers, or a client without an `orgs` limit).
    """
    services = request.app[SERVICES]
    cache = services.cache
    degraded = [f"cache: {cache.describe()}"] if redis_unreachable(cache) else []
    states = await org_states(services)
    if not _may_see_every_org(request, services):
        down = sum(1 for org in states if not org.good or org.breaker == "open")
        if down:
            degraded.append(f"{down} of {len(states)} organisations unavailable")
        body = {"status": "degraded" if degraded else "ok", "cache": cache.describe(), "degraded": degraded}
        return web.json_response(body, headers=NO_STORE)
    orgs: dict[str, object] = {}
    for org in states:
        orgs[org.id] = {
            "last": org.last,
            "breaker": org.breaker,
            "breaker_reason": org.breaker_reason or None,
            "retry_in": org.retry_in,
            "failures": org.failures,
            "budget_limit": org.budget_limit,
            "budget_remaining": org.budget_remaining,
            "rate_limited_for": org.rate_limited_for,
            "window_spent": dict(org.window_spent),
            "deferred_durations": org.deferred,
        }
        if not org.good:
            degraded.append(f"org {org.id}: {org.last}")
        if org.breaker == "open":
            degraded.append(f"org {org.id}: skipped ({org.breaker_reason})")
    detail: dict[str, object] = {
        "status": "degraded" if degraded else "ok",
        "cache": cache.describe(),
        "orgs": orgs,
        "degraded": degraded,
    }
    return web.json_response(detail, headers=NO_STORE)


def _may_see_every_org(request: web.Request, services: Services) -> bool:
    """/status's rule: an open service's callers, or a client whose token sees every org."""
    caller = services.auth.caller(request)
    return caller is not None and (caller.client is None or caller.client.orgs is None)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus; behind `server.metrics_token` (a Bearer token) when one is set."""
    services = request.app[SERVICES]
    token = services.config.server.metrics_token
    if token is not None:
        # A Bearer token (RFC 6750; the scheme is case-insensitive, RFC 9110 11.1), never a bare one.
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return web.Response(
                status=401,
                text="A metrics token is needed.\n",
                headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    m = services.metrics
    for org in await org_states(services):  # fleet-wide, from the cache
        m.breaker_open.labels(org.id).set(1 if org.breaker == "open" else 0)
        m.budget_remaining.labels(org.id).set(org.budget_remaining)
    if isinstance(services.cache, ResilientCache):
        m.redis_up.set(0 if redis_unreachable(services.cache) else 1)
        m.redis_full_refusals.set(services.cache.full_refusals)
    return web.Response(body=m.exposition(), headers={"Content-Type": METRICS_TYPE, **NO_STORE})


async def status(request: web.Request) -> web.Response:
    """A small page for operators: each org's breaker, budget, latency and last error; the cache.

    It names every org, so with [[clients]] it needs a client that may see them all.
    """
    services = request.app[SERVICES]
    config = request.app[CONFIG]
    caller = services.auth.caller(request)
    if caller is None:
        return unauthorized(HTML.name)
    if not _may_see_every_org(request, services):
        return web.Response(
            status=403,
            text="This page names every organisation: a client limited to some may not see it.\n",
            headers=NO_STORE,
        )
    rows = [
        {
            "id": org.id,
            "name": org.name,
            "breaker": f"{org.breaker} ({org.breaker_reason})" if org.breaker_reason else org.breaker,
            "budget_remaining": org.budget_remaining,
            "budget_limit": org.budget_limit,
            "rate_limited_for": (round(org.rate_limited_for) or None) if org.rate_limited_for else None,
            "spent": ", ".join(f"{n} {kind}" for kind, n in org.window_spent),
            "deferred": org.deferred,
            "p50": round(org.latency[0]) if org.latency else None,
            "p95": round(org.latency[1]) if org.latency else None,
            "last": org.last,
            "error": org.error,
        }
        for org in await org_states(services)
    ]
    cache, pages = services.cache, services.pages
    memory = cache.memory if isinstance(cache, ResilientCache) else cache
    used = (memory.bytes if isinstance(memory, MemoryCache) else 0) + pages.bytes
    html = render_status(
        base_url=config.server.public_url,
        short_name=config.description.short_name,
        rows=rows,
        cache=cache.describe(),
        redis_down=redis_unreachable(cache),
        memory_mb=round(used / 1048576, 1),
        memory_max_mb=round(config.cache.memory_max_bytes / 1048576),
        pages=len(pages),
        subscriptions=await services.subscriptions.count(),
    )
    headers = request.app[PAGE_HEADERS].copy()
    headers["Cache-Control"] = "no-store"
    return web.Response(text=html, content_type=HTML.media_type, headers=headers)
