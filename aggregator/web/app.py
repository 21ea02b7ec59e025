"""The HTTP service: the app factory and its handlers.

`create_app(config)` builds an application whose client session, parse
workers, cache and `Searcher` are opened and closed in `cleanup_ctx`. Routes
come from the format registry (`aggregator.render.formats`). Search handlers
validate every parameter first (a 400 naming it, in the client's format), ask
the `Searcher`, and render one page through the format's renderer; per-org
outcomes go out as `Server-Timing`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from aggregator.caller import Caller
from aggregator.config import Config
from aggregator.freshness import refresher as refresher_mod
from aggregator.freshness import websub
from aggregator.freshness.refresher import Refresher
from aggregator.freshness.subscriptions import Subscription, Subscriptions
from aggregator.ilos import webhook as hooks
from aggregator.ilos.budget import Budget
from aggregator.ilos.client import new_session
from aggregator.ilos.parsepool import ParsePool
from aggregator.loop import heap, lag
from aggregator.loop.flights import Flights
from aggregator.metrics import METRICS, METRICS_TYPE, Metrics
from aggregator.model import RANDTAG_RE, Clock, Result, Sort, Video
from aggregator.params import MAX_QUERY, ParamError, SearchParams, params_of_url, parse_search_params
from aggregator.render.description import render_description, render_osdx
from aggregator.render.formats import BY_NAME, DESCRIPTION, FORMATS, HTML, SUGGESTIONS, Format
from aggregator.render.icons import play_icon
from aggregator.render.page import STYLESHEET, render_form, render_status, security_headers
from aggregator.render.paging import facets, filtered, page_of
from aggregator.render.presentation import View
from aggregator.search import thumbnails
from aggregator.search.searcher import Searcher
from aggregator.store import cache as caches
from aggregator.store import keys
from aggregator.store.cache import Cache
from aggregator.store.limiter import Limiter, shared_storage
from aggregator.store.memory import MemoryCache
from aggregator.store.resilient import ResilientCache
from aggregator.web.accesslog import CLIENT
from aggregator.web.auth import Authenticator, unauthorized
from aggregator.web.callerlimits import CallerLimits
from aggregator.web.cors import Cors
from aggregator.web.httpcache import CachedPage, body_etag, build_page, first_seen, remember, respond

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)
STOP_WAIT = 5.0  # seconds background tasks get to end at shutdown

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey[Clock]("clock")
CACHE = web.AppKey[Cache]("cache")
PAGES = web.AppKey("pages", MemoryCache)
RENDERING = web.AppKey[Flights[str, CachedPage]]("rendering")
SEARCHER = web.AppKey("searcher", Searcher)
PARSE_POOL = web.AppKey("parse_pool", ParsePool)
AUTH = web.AppKey("auth", Authenticator)
PAGE_HEADERS = web.AppKey[dict[str, str]]("page_headers")
LIMITS = web.AppKey("limits", CallerLimits)
SUBSCRIPTIONS = web.AppKey("subscriptions", Subscriptions)
REFRESHER = web.AppKey("refresher", Refresher)
REFRESH_EVERY = web.AppKey[float | None]("refresh_every")

REFRESHER_ID = "refresher"  # who asked, for the suggestions' count of callers
NO_STORE = {"Cache-Control": "no-store"}
_SAFE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
CORS_PATHS = frozenset(f.path for f in FORMATS if f.cors)
CORS_POLICY = web.AppKey("cors", Cors)


def create_app(
    config: Config, *, clock: Clock = time.time, refresh_every: float | None = refresher_mod.INTERVAL
) -> web.Application:
    """`clock` (epoch seconds) decides every expiry; tests pass their own to move time.

    `refresh_every`: seconds between refresh-ahead passes; None runs none (tests drive
    `app[REFRESHER].run_once()` themselves).
    """
    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(_no_store_errors)
    app.on_response_prepare.append(_cors)
    app.on_response_prepare.append(_request_id)
    app[CORS_POLICY] = Cors(config.web.cors_origins)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[PAGES] = MemoryCache(caches.pages_share(config.cache.memory_max_bytes), clock=clock)
    app[RENDERING] = Flights("render")
    app[METRICS] = Metrics()
    app[METRICS].formats_by_route = {f.path: f.name for f in FORMATS} | {"/embed": HTML.name}
    app[AUTH] = Authenticator(config)
    app[PAGE_HEADERS] = security_headers(config.server.public_url, config.web.frame_ancestors)
    app[REFRESH_EVERY] = refresh_every
    app.cleanup_ctx.append(_resources)
    special: dict[str, Handler] = {
        HTML.name: search_page,
        SUGGESTIONS.name: suggest,
        DESCRIPTION.name: description,
    }
    for fmt in FORMATS:
        app.router.add_get(fmt.path, special.get(fmt.name) or _search_handler(fmt))
        if fmt.cors:
            app.router.add_route("OPTIONS", fmt.path, preflight)
    app.router.add_get("/embed", search_page)
    app.router.add_get("/search.osdx", windows_connector)
    app.router.add_get("/static/search.css", stylesheet)
    app.router.add_get("/thumbnails/{randtag}", thumbnail)
    app.router.add_get("/icon-{size:16|64}.png", icon)
    app.router.add_get("/favicon.ico", icon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/hooks/ilos/{org_id}/{secret}", ilos_upload)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = new_session()
    parse_pool = ParsePool(config.server.parse_workers)
    app[PARSE_POOL] = parse_pool
    try:
        await parse_pool.start()
        async with (
            caches.from_config(config.cache, app[CLOCK]) as cache,
            shared_storage(config.cache) as shared,
        ):
            app[CACHE] = cache
            limiter = Limiter(shared, config.cache.redis_retry_seconds, app[CLOCK])
            app[LIMITS] = CallerLimits(config, limiter)
            budget = Budget(config, cache, limiter, app[CLOCK])
            app[SEARCHER] = Searcher(config, session, cache, parse_pool, budget, app[METRICS], app[CLOCK])
            feed_paths = {f.name: f.path for f in FORMATS if f.subscribable}
            app[SUBSCRIPTIONS] = Subscriptions(config, cache, app[CLOCK], feed_paths)
            refresher = app[REFRESHER] = Refresher(
                config,
                cache,
                app[SUBSCRIPTIONS],
                app[SEARCHER],
                functools.partial(_announce, app, session),
                app[PAGES].clear,
                app[CLOCK],
            )
            await _warm_up_renderers(config)
            heap.settle_heap()
            stop_timing = lag.time_iterations(app[METRICS].loop_iteration_cpu.observe)
            background = [
                asyncio.create_task(app[SEARCHER].run_background()),
                asyncio.create_task(lag.watch(app[METRICS].loop_tick)),
                asyncio.create_task(heap.collect_in_own_turns()),
            ]
            every = app[REFRESH_EVERY]
            if every is not None:
                background.append(asyncio.create_task(refresher.run(every)))
            yield
            stop_timing()
            await _stop(background)
    finally:
        await session.close()
        await parse_pool.close()


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background tasks and wait for them, but not for ever: shutdown must end."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT)
    for task in stuck:
        log.error("shutdown: a background task did not stop (%s)", task.get_coro())


async def _announce(app: web.Application, session: aiohttp.ClientSession, sub: Subscription) -> None:
    """After a refresh: render an open subscribed feed again (so its next poll is a page-cache
    hit) and, with a WebSub hub, announce it if it changed."""
    hub = app[CONFIG].server.websub_hub
    fmt = BY_NAME.get(sub.fmt)
    if hub is None or not sub.open or fmt is None or fmt.render is None:
        return
    caller = app[AUTH].anyone
    try:
        params = params_of_url(sub.url, caller.visible_orgs)
    except ParamError:
        return
    page_key = _page_key(fmt, "", caller, params)
    served_before, _ = await first_seen(app[CACHE], keys.key("page", keys.query_digest(page_key)))
    page = await app[RENDERING].join(
        page_key, lambda: _render(app, page_key, params, caller, REFRESHER_ID, fmt, "")
    )
    keep(app[PAGES], page_key, page, app[CLOCK]())
    outcome = await websub.announce_if_changed(
        session, app[CACHE], hub, sub.id, sub.url, page.etag, served_before
    )
    if outcome is not None:
        app[METRICS].websub_pings.labels(outcome).inc()


async def ilos_upload(request: web.Request) -> web.Response:
    """ilos's upload webhook: look the video's duration up and refresh the org's subscribed feeds first."""
    app = request.app
    metrics = app[METRICS]
    org_id = request.match_info["org_id"]
    if not hooks.secret_matches(app[CONFIG], org_id, request.match_info["secret"]):
        metrics.webhooks.labels("refused").inc()
        raise web.HTTPNotFound()  # as for any path that does not exist
    try:
        upload = await hooks.read_upload(request, org_id)
    except hooks.HookRefused as exc:
        metrics.webhooks.labels("too_large" if exc.status == 413 else "bad_json").inc()
        return web.json_response({"error": exc.reason}, status=exc.status, headers=NO_STORE)
    await app[SEARCHER].look_up_duration(upload.org_id, upload.randtag)
    fronted = await app[SUBSCRIPTIONS].front(upload.org_id)
    metrics.webhooks.labels("accepted").inc()
    log.info(
        "upload webhook: org=%s randtag=%s, %d subscribed searches to refresh",
        org_id,
        upload.randtag,
        fronted,
    )
    return web.json_response(
        {"accepted": upload.randtag, "refreshing": fronted}, status=202, headers=NO_STORE
    )


async def _warm_up_renderers(config: Config) -> None:
    """Render every format once before serving.

    A first render imports feedgen's extensions and compiles templates: ~40 ms
    that would otherwise hold the loop during the first user's request.
    """
    orgs = tuple(o.id for o in config.orgs)
    video = Video("warmup0000", "Warm-up", "https://example.invalid/v", "https://example.invalid/e")
    params = SearchParams("warm up", 20, 1, Sort.RELEVANCE, orgs)
    view = View(
        page=page_of(params, (Result(video, orgs[:1], 1.0),)),
        base_url=config.server.public_url,
        org_names={o.id: o.name for o in config.orgs},
        all_orgs=orgs,
        formats=BY_NAME,
    )
    for fmt in FORMATS:
        if fmt.render is not None:
            await fmt.render(view)


# -- errors -----------------------------------------------------------------------


async def _no_store_errors(request: web.Request, response: web.StreamResponse) -> None:
    """Errors are never cached (aiohttp's own 404s, 405s and 500s included).

    A response signal rather than a middleware: it costs less on the warm path,
    and aiohttp already answers an unhandled exception with a bare 500 and
    logs it, never showing a traceback.
    """
    if response.status >= 400:
        response.headers["Cache-Control"] = "no-store"


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    """Who may read the feeds, suggestions and description from a script, errors included."""
    if request.path in CORS_PATHS:
        headers = request.app[CORS_POLICY].headers(request.headers)
        if "Vary" in headers and "Vary" in response.headers:
            response.headers["Vary"] = f"{response.headers['Vary']}, Origin"
            headers = {k: v for k, v in headers.items() if k != "Vary"}
        response.headers.update(headers)


async def _request_id(request: web.Request, response: web.StreamResponse) -> None:
    """X-Request-Id on every answer: the caller's own if it is safe to repeat, else a new one.

    The access log line carries the same id, which ties a response to its log line.
    """
    given = request.headers.get("X-Request-Id")
    if given is None or not _SAFE_ID_RE.fullmatch(given):
        given = secrets.token_hex(8)
    response.headers["X-Request-Id"] = given


async def preflight(request: web.Request) -> web.Response:
    """The browser's OPTIONS before a cross-origin GET with Authorization: no token needed to ask."""
    return web.Response(status=204, headers=request.app[CORS_POLICY].preflight(request.headers))


def bad_request(
    request: web.Request,
    fmt: Format,
    error: ParamError,
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A 400 that names the parameter and its rule, in the format the client asked for."""
    return error_response(request, fmt, 400, str(error), {"parameter": error.param}, variant, headers)


def too_many(
    request: web.Request,
    fmt: Format,
    retry_after: float,
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """429: this caller is over its limit; nothing was asked upstream."""
    seconds = int(retry_after)
    headers = {**(headers or {}), "Retry-After": str(seconds)}
    message = f"Too many requests: try again in {seconds} s."
    return error_response(request, fmt, 429, message, {"retry_after": seconds}, variant, headers)


def error_response(
    request: web.Request,
    fmt: Format,
    status: int,
    message: str,
    fields: dict[str, object],
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the client's format: JSON for the JSON formats, the page for people, else text."""
    headers = {**(headers or {}), **NO_STORE}
    if fmt.media_type.endswith("json"):
        return web.json_response({"error": message, **fields}, status=status, headers=headers)
    if fmt is HTML:
        config = request.app[CONFIG]
        html = render_form(
            config.server.public_url,
            config.description.short_name,
            q=request.query.get("q", "")[:MAX_QUERY],
            error=message,
            embed=variant == "embed",
            language=config.description.language,
        )
        return web.Response(text=html, content_type=HTML.media_type, status=status, headers=headers)
    prefix = "Bad request: " if status == 400 else ""
    return web.Response(status=status, text=f"{prefix}{message}\n", headers=headers)


# -- search -----------------------------------------------------------------------


def _search_handler(fmt: Format) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_search(request, fmt)

    handler.__name__ = f"{fmt.name}_search"
    return handler


async def serve_search(
    request: web.Request, fmt: Format, variant: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    """The path every search format shares: authenticate, validate, page cache, render once.

    `variant` tells apart pages of one format that differ for the same search
    (the embedded search page); `headers` are added to every answer.
    """
    app = request.app
    caller = app[AUTH].caller(request)
    if caller is None:
        return unauthorized(fmt.name)
    if caller.client is not None:
        request[CLIENT] = caller.client.name  # for the JSON access log: the name, never the token
    if app[LIMITS].active:
        retry_after = await app[LIMITS].admit(caller, request.remote, request.headers.get("X-Forwarded-For"))
        if retry_after is not None:
            app[METRICS].caller_rejected.labels("client" if caller.client else "anonymous").inc()
            return too_many(request, fmt, retry_after, variant, headers)
    if fmt.subscribable:
        app[SUBSCRIPTIONS].polled(fmt.name, request.raw_path, caller)
    private = caller.authenticated
    pages = app[PAGES]
    clock = app[CLOCK]
    # The exact query string (and caller) names a page already validated and
    # rendered: the warm path is this one dict lookup.
    raw_key = f"{fmt.name}{request.raw_path}#{caller.cache_scope}"
    page = pages.get_now(raw_key)
    if page is not None:
        app[METRICS].page(fmt.name, "reused")
        return respond(request, page, private=private, hit=True, now=clock(), extra=headers)
    try:
        params = parse_search_params(request.query, caller.visible_orgs)
    except ParamError as exc:
        return bad_request(request, fmt, exc, variant, headers)
    page_key = _page_key(fmt, variant, caller, params)
    page = pages.get_now(page_key)
    if page is not None:
        app[METRICS].page(fmt.name, "reused")
        keep(pages, raw_key, page, clock())
        return respond(request, page, private=private, hit=True, now=clock(), extra=headers)
    # Who asked, for the suggestions' count of distinct callers; counted when a page is rendered,
    # so a query answered from the page cache is under-counted, never over-counted.
    caller_id = app[LIMITS].identity(caller, request.remote, request.headers.get("X-Forwarded-For"))
    page = await app[RENDERING].join(
        page_key, lambda: _render(app, page_key, params, caller, caller_id, fmt, variant)
    )
    app[METRICS].page(fmt.name, "rendered")
    keep(pages, raw_key, page, clock())
    return respond(request, page, private=private, hit=False, now=clock(), extra=headers)


def _page_key(fmt: Format, variant: str, caller: Caller, params: SearchParams) -> str:
    """What tells rendered pages apart: everything that changes the bytes, nothing else."""
    return "\x1f".join(
        (
            fmt.name,
            variant,
            caller.cache_scope,
            params.q,
            ",".join(params.orgs),
            params.sort,
            str(params.count),
            str(params.start_index),
            params.length or "",
            params.after.isoformat() if params.after else "",
        )
    )


def keep(pages: MemoryCache, key: str, page: CachedPage, now: float) -> None:
    """Keep a rendered page under `key` until the first of its org answers goes stale."""
    ttl = page.expires_at - now
    if ttl > 0:
        pages.set_now(key, page, ttl)


async def _render(
    app: web.Application,
    page_key: str,
    params: SearchParams,
    caller: Caller,
    caller_id: str,
    fmt: Format,
    variant: str,
) -> CachedPage:
    config = app[CONFIG]
    assert fmt.render is not None  # only formats with a renderer are routed here
    answer = await app[SEARCHER].search(params.normalised_query, params.orgs, params.sort, caller_id)
    # A turn of the loop before the page is built: the search's last step (learning its
    # last titles) and the render (3-9 ms for 20 entries on a slow machine) were one step.
    await asyncio.sleep(0)
    extra = (("key", caller.key_param),) if caller.key_param else ()
    kept, left_out = filtered(params, answer.results)
    view = View(
        facets=facets(params, answer.results) if fmt is HTML else None,
        page=page_of(params, kept),
        unknown_length_left_out=left_out,
        base_url=config.server.public_url,
        org_names={o.id: o.name for o in config.orgs},
        all_orgs=caller.visible_orgs,
        formats=BY_NAME,
        short_name=config.description.short_name,
        language=config.description.language,
        reports=answer.reports,
        variant=variant,
        extra=extra,
        thumbnail_query=thumbnails.scope_query(_signing_secret(config), caller.visible_orgs),
        hub=config.server.websub_hub if caller.client is None else None,
    )
    now = app[CLOCK]()
    # Last-Modified is when this representation first appeared with its current ETag, kept
    # in the shared cache; a page with no dated entry is dated by that time too (never 1970).
    record = keys.key("page", keys.query_digest(page_key))
    seen_etag, seen_at = await first_seen(app[CACHE], record)
    # On the loop, in turns: a 100-entry page takes 15-40 ms, and in a thread it would cost the
    # loop more than that in waits for the GIL while it sends and receives (measured: 25 ms a turn).
    body = await fmt.render(replace(view, first_seen=_utc(seen_at or now)))
    if seen_etag != body_etag(body) and seen_at is not None and view.uses_first_seen:
        # changed: dated by now, like its validator
        body = await fmt.render(replace(view, first_seen=_utc(now)))
    etag = body_etag(body)
    if etag != seen_etag:
        seen_at = now
        await remember(app[CACHE], record, etag, now)
    page = build_page(
        body,
        fmt.content_type,
        seen_at or now,
        answer.fresh_until,
        answer.reports,
        answer.complete,
        now,
        answer.pending_durations,
    )
    keep(app[PAGES], page_key, page, now)
    return page


async def search_page(request: web.Request) -> web.Response:
    """The page people use; `embed=1` (or /embed) is the compact layout for iframes."""
    config = request.app[CONFIG]
    embed = request.path == "/embed" or request.query.get("embed") in ("1", "true")
    headers = request.app[PAGE_HEADERS]
    if request.query.get("q", "").strip():
        return await serve_search(request, HTML, "embed" if embed else "", headers)
    html = render_form(
        config.server.public_url,
        config.description.short_name,
        embed=embed,
        language=config.description.language,
    )
    return web.Response(
        text=html, content_type=HTML.media_type, headers={**headers, "Cache-Control": "public, max-age=300"}
    )


async def suggest(request: web.Request) -> web.Response:
    """OpenSearch suggestions: `[prefix, [completions]]`, from memory, never from upstream."""
    caller = request.app[AUTH].caller(request)
    if caller is None:
        return unauthorized(SUGGESTIONS.name)
    if request.app[LIMITS].active:
        retry_after = await request.app[LIMITS].admit(
            caller, request.remote, request.headers.get("X-Forwarded-For")
        )
        if retry_after is not None:
            request.app[METRICS].caller_rejected.labels("client" if caller.client else "anonymous").inc()
            return too_many(request, SUGGESTIONS, retry_after)
    prefix = request.query.get("q", "")
    if len(prefix) > MAX_QUERY or any(ord(c) < 32 for c in prefix):
        return web.json_response(
            {"error": f"q: must be at most {MAX_QUERY} printable characters", "parameter": "q"},
            status=400,
            headers=NO_STORE,
        )
    found = request.app[SEARCHER].suggest(prefix, caller.visible_orgs)
    scope = "private" if caller.authenticated else "public"
    return web.Response(
        body=json.dumps([prefix, found], ensure_ascii=False).encode(),
        content_type=SUGGESTIONS.media_type,
        charset="utf-8",
        headers={"Cache-Control": f"{scope}, max-age=60", "Vary": "Authorization"},
    )


# -- everything else ----------------------------------------------------------------


async def description(request: web.Request) -> web.Response:
    body = render_description(request.app[CONFIG])
    return web.Response(
        body=body,
        content_type=DESCRIPTION.media_type,
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


async def windows_connector(request: web.Request) -> web.Response:
    """Opened in Windows Explorer, this adds the service as a federated search location."""
    config = request.app[CONFIG]
    filename = re.sub(r"[^A-Za-z0-9 ._-]", "", config.description.short_name) or "search"
    return web.Response(
        body=render_osdx(config),
        content_type=DESCRIPTION.media_type,
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.osdx"',
            "Cache-Control": "public, max-age=86400",
        },
    )


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=STYLESHEET,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def thumbnail(request: web.Request) -> web.Response:
    """A stable URL for a video's picture: redirects to upstream's current signed URL."""
    randtag = request.match_info["randtag"]
    if not RANDTAG_RE.fullmatch(randtag):
        raise web.HTTPNotFound(text="No such video.\n")
    config = request.app[CONFIG]
    scope = thumbnails.scope_of(_signing_secret(config), [o.id for o in config.orgs], dict(request.query))
    if scope is None:
        raise web.HTTPNotFound(text="No such video.\n")
    redirect = await request.app[SEARCHER].thumbnail(randtag, scope)
    if redirect is None:
        raise web.HTTPNotFound(text="No thumbnail known for this video.\n")
    cache_control = "private, max-age=60" if redirect.cacheable else "no-store"
    raise web.HTTPFound(redirect.location, headers={"Cache-Control": cache_control})


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


def _signing_secret(config: Config) -> str | None:
    """Thumbnail URLs are scoped only where callers are: an open service shows every org to everyone."""
    return config.server.signing_secret if config.clients else None


async def icon(request: web.Request) -> web.Response:
    size = int(request.match_info.get("size", "64"))
    return web.Response(
        body=play_icon(size), content_type="image/png", headers={"Cache-Control": "public, max-age=604800"}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=NO_STORE)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus; behind `server.metrics_token` (a Bearer token) when one is set."""
    token = request.app[CONFIG].server.metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(
                status=401,
                text="A metrics token is needed.\n",
                headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    m = request.app[METRICS]
    cache = request.app[CACHE]
    now = request.app[CLOCK]()
    for org_id, health in (await request.app[SEARCHER].health()).items():  # fleet-wide, from the cache
        m.breaker_open.labels(org_id).set(1 if health.breaker.is_open(now) else 0)
        m.budget_remaining.labels(org_id).set(health.budget.remaining)
    if isinstance(cache, ResilientCache):
        m.redis_up.set(0 if caches.redis_unreachable(cache) else 1)
    return web.Response(body=m.exposition(), headers={"Content-Type": METRICS_TYPE, **NO_STORE})


async def status(request: web.Request) -> web.Response:
    """A small page for operators: each org's breaker, budget, latency and last error; the cache.

    It names every org, so with [[clients]] it needs a client that may see them all.
    """
    app = request.app
    config = app[CONFIG]
    caller = app[AUTH].caller(request)
    if caller is None:
        return unauthorized(HTML.name)
    if caller.client is not None and caller.client.orgs is not None:
        return web.Response(
            status=403,
            text="This page names every organisation: a client limited to some may not see it.\n",
            headers=NO_STORE,
        )
    searcher, cache, now = app[SEARCHER], app[CACHE], app[CLOCK]()
    rows = []
    healths = await searcher.health()  # one read of the shared state for every org
    for org in config.orgs:
        health = healths[org.id]
        latency = searcher.latency(org.id)
        breaker = health.breaker.describe(now)
        rows.append(
            {
                "id": org.id,
                "name": org.name,
                "breaker": f"{breaker} ({health.breaker.reason})" if health.breaker.reason else breaker,
                "budget_remaining": health.budget.remaining,
                "budget_limit": health.budget.limit,
                "rate_limited_for": round(max(0.0, health.budget.cooling_until - now)) or None,
                "deferred": health.deferred,
                "p50": round(latency[0]) if latency else None,
                "p95": round(latency[1]) if latency else None,
                "last": str(health.report.status) if health.report else None,
                "error": searcher.last_error(org.id),
            }
        )
    memory = cache.memory if isinstance(cache, ResilientCache) else cache
    used = (memory.bytes if isinstance(memory, MemoryCache) else 0) + app[PAGES].bytes
    html = render_status(
        base_url=config.server.public_url,
        short_name=config.description.short_name,
        rows=rows,
        cache=cache.describe(),
        redis_down=caches.redis_unreachable(cache),
        memory_mb=round(used / 1048576, 1),
        memory_max_mb=round(config.cache.memory_max_bytes / 1048576),
        pages=len(app[PAGES]),
        subscriptions=await app[SUBSCRIPTIONS].count(),
    )
    headers = request.app[PAGE_HEADERS].copy()
    headers["Cache-Control"] = "no-store"
    return web.Response(text=html, content_type=HTML.media_type, headers=headers)


async def readyz(request: web.Request) -> web.Response:
    """Can serve (always, while the process runs); says what is degraded, and each org's state."""
    cache = request.app[CACHE]
    now = request.app[CLOCK]()
    degraded = [f"cache: {cache.describe()}"] if caches.redis_unreachable(cache) else []
    orgs: dict[str, object] = {}
    for org_id, health in (await request.app[SEARCHER].health()).items():
        last = health.report.status if health.report else None
        breaker = health.breaker.describe(now)
        orgs[org_id] = {
            "last": str(last) if last else None,
            "breaker": breaker,
            "breaker_reason": health.breaker.reason or None,
            "retry_in": round(health.breaker.open_until - now, 1) if breaker == "open" else None,
            "failures": health.breaker.failures,
            "budget_limit": health.budget.limit,
            "budget_remaining": health.budget.remaining,
            "rate_limited_for": round(max(0.0, health.budget.cooling_until - now), 1) or None,
            "deferred_durations": health.deferred,
        }
        if last is not None and not last.good:
            degraded.append(f"org {org_id}: {last}")
        if breaker == "open":
            degraded.append(f"org {org_id}: skipped ({health.breaker.reason})")
    body = {
        "status": "degraded" if degraded else "ok",
        "cache": cache.describe(),
        "orgs": orgs,
        "degraded": degraded,
    }
    return web.json_response(body, headers=NO_STORE)
