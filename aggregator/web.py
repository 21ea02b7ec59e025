"""The HTTP service: app factory, resources and handlers.

`create_app(config)` builds an application whose client session, parse
workers and cache are opened and closed in `cleanup_ctx`. Handlers validate
every parameter first (a 400 naming it, in the client's format), ask the
`Searcher`, and render one page; per-org outcomes go out as `Server-Timing`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import jinja2
from aiohttp import web

from aggregator import PRODUCT, __version__
from aggregator.answers import GOOD
from aggregator.atom import render_atom
from aggregator.auth import Authenticator, Caller, unauthorized
from aggregator.cache import Cache, MemoryCache, RedisCache, ResilientCache, redis_client
from aggregator.config import Config
from aggregator.description import render_description, render_osdx
from aggregator.feeds import ATOM_TYPE, DESCRIPTION_TYPE, RSS_TYPE
from aggregator.httpcache import CachedPage, build_page, respond
from aggregator.icons import play_icon
from aggregator.jsonfeed import JSON_FEED_TYPE, render_json_feed
from aggregator.metrics import METRICS_TYPE, Metrics
from aggregator.paging import page_of
from aggregator.params import MAX_QUERY, ParamError, SearchParams, parse_search_params
from aggregator.parsing import RANDTAG_RE
from aggregator.presentation import View
from aggregator.resources import resource_dir
from aggregator.rss import render_rss
from aggregator.parsepool import ParsePool
from aggregator.search import SearchAnswer, Searcher
from aggregator.suggestions import SUGGESTIONS_TYPE
from aggregator.upstream import new_session
from aggregator.videos import format_duration

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
CACHE = web.AppKey("cache", Cache)
PAGES = web.AppKey("pages", MemoryCache)
RENDERING = web.AppKey("rendering", dict)
SEARCHER = web.AppKey("searcher", Searcher)
METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", Authenticator)
TEMPLATES = web.AppKey("templates", jinja2.Environment)

TEMPLATE_DIR = resource_dir("templates")
STYLESHEET = (TEMPLATE_DIR / "search.css").read_bytes()
NO_STORE = {"Cache-Control": "no-store"}
HTML_TYPE = "text/html"


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(_no_store_errors)
    app[CONFIG] = config
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    app[TEMPLATES].filters["duration"] = format_duration
    app[PAGES] = MemoryCache(max_entries=2_000)
    app[RENDERING] = {}
    app[METRICS] = Metrics()
    app[AUTH] = Authenticator(config)
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/", search_page)
    app.router.add_get("/embed", search_page)
    app.router.add_get("/search.atom", atom_feed)
    app.router.add_get("/search.rss", rss_feed)
    app.router.add_get("/search.json", json_feed)
    app.router.add_get("/suggest", suggest)
    app.router.add_get("/opensearch.xml", description)
    app.router.add_get("/search.osdx", windows_connector)
    app.router.add_get("/static/search.css", stylesheet)
    app.router.add_get("/thumbnails/{randtag}", thumbnail)
    app.router.add_get("/icon-{size:16|64}.png", icon)
    app.router.add_get("/favicon.ico", icon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = new_session()
    parse_pool = ParsePool(config.server.parse_workers)
    memory = MemoryCache(config.cache.memory_max_entries)
    client = redis_client(config.cache.redis_url) if config.cache.redis_url else None
    cache: Cache = memory if client is None else ResilientCache(
        RedisCache(client), memory, config.cache.redis_retry_seconds)
    app[CACHE] = cache
    app[SEARCHER] = Searcher(config, session, cache, parse_pool, app[METRICS])
    try:
        yield
    finally:
        await session.close()
        if client is not None:
            await client.aclose()
        # Wait for the workers while the interpreter is whole: shutting down
        # without waiting leaves their stop sentinel in a queue whose feeder
        # thread dies at exit, and the process then hangs joining them.
        await asyncio.get_running_loop().run_in_executor(None, parse_pool.shutdown)


# -- errors -----------------------------------------------------------------------


async def _no_store_errors(request: web.Request, response: web.StreamResponse) -> None:
    """Errors are never cached (aiohttp's own 404s, 405s and 500s included).

    A response signal rather than a middleware: it costs less on the warm path,
    and aiohttp already answers an unhandled exception with a bare 500 and
    logs it, never showing a traceback.
    """
    if response.status >= 400:
        response.headers["Cache-Control"] = "no-store"


def bad_request(request: web.Request, fmt: str, error: ParamError, variant: str = "",
                headers: dict[str, str] | None = None) -> web.Response:
    """A 400 that names the parameter and its rule, in the format the client asked for."""
    if fmt == "json":
        return web.json_response({"error": str(error), "parameter": error.param}, status=400,
                                 headers=NO_STORE)
    if fmt == "html":
        html = request.app[TEMPLATES].get_template("search.html").render(page_context(
            request.app[CONFIG], q=request.query.get("q", "")[:256], error=str(error),
            embed=variant == "embed"))
        return web.Response(text=html, content_type=HTML_TYPE, status=400,
                            headers={**(headers or {}), **NO_STORE})
    return web.Response(status=400, text=f"Bad request: {error}\n", headers=NO_STORE)


# -- search -----------------------------------------------------------------------

# (app, view, answer, variant=...) -> (body, content type)
Renderer = Callable[..., tuple[bytes, str]]


async def serve_search(request: web.Request, fmt: str, renderer: Renderer, variant: str = "",
                       headers: dict[str, str] | None = None) -> web.Response:
    """The path every search format shares: authenticate, validate, page cache, render once.

    `variant` tells apart pages of one format that differ for the same search
    (the embedded search page); `headers` are added to every answer.
    """
    app = request.app
    caller = app[AUTH].caller(request)
    if caller is None:
        return unauthorized(fmt)
    private = caller.authenticated
    pages = app[PAGES]
    # The exact query string (and caller) names a page already validated and
    # rendered: the warm path is this one dict lookup.
    raw_key = f"{fmt}{request.raw_path}#{caller.cache_scope}"
    page = pages.get_now(raw_key)
    if page is not None:
        app[METRICS].page(fmt, "reused")
        return respond(request, page, private=private, hit=True, extra=headers)
    try:
        params = parse_search_params(request.query, caller.visible_orgs)
    except ParamError as exc:
        return bad_request(request, fmt, exc, variant, headers)
    page_key = "\x1f".join((fmt, variant, caller.cache_scope, params.q, ",".join(params.orgs),
                            params.sort, str(params.count), str(params.start_index)))
    page = pages.get_now(page_key)
    if page is not None:
        app[METRICS].page(fmt, "reused")
        keep(pages, raw_key, page)
        return respond(request, page, private=private, hit=True, extra=headers)
    rendering = app[RENDERING]
    task = rendering.get(page_key)
    if task is None:
        task = asyncio.ensure_future(_render(app, page_key, params, caller,
                                             functools.partial(renderer, variant=variant)))
        rendering[page_key] = task
        task.add_done_callback(lambda _t: rendering.pop(page_key, None))
    page = await asyncio.shield(task)
    app[METRICS].page(fmt, "rendered")
    keep(pages, raw_key, page)
    return respond(request, page, private=private, hit=False, extra=headers)


def keep(pages: MemoryCache, key: str, page: CachedPage) -> None:
    """Keep a rendered page under `key` until the first of its org answers goes stale."""
    ttl = page.expires_at - time.time()
    if ttl > 0:
        pages.set_now(key, page, ttl)


async def _render(app: web.Application, page_key: str, params: SearchParams, caller: Caller,
                  renderer: Renderer) -> CachedPage:
    config = app[CONFIG]
    answer = await app[SEARCHER].search(params.normalised_query, params.orgs, params.sort)
    extra = (("key", caller.key_param),) if caller.key_param else ()
    view = View(page=page_of(params, answer.results), base_url=config.server.public_url,
                org_names={o.id: o.name for o in config.orgs}, all_orgs=caller.visible_orgs,
                extra=extra)
    body, content_type = renderer(app, view, answer)
    page = build_page(body, content_type, view.updated, answer.fresh_until, answer.reports,
                      answer.complete)
    keep(app[PAGES], page_key, page)
    return page


def _atom(app: web.Application, view: View, answer: SearchAnswer, variant: str) -> tuple[bytes, str]:
    return render_atom(view), f"{ATOM_TYPE}; charset=utf-8"


def _rss(app: web.Application, view: View, answer: SearchAnswer, variant: str) -> tuple[bytes, str]:
    return render_rss(view), f"{RSS_TYPE}; charset=utf-8"


def _json(app: web.Application, view: View, answer: SearchAnswer, variant: str) -> tuple[bytes, str]:
    return render_json_feed(view), JSON_FEED_TYPE


def _html(app: web.Application, view: View, answer: SearchAnswer, variant: str) -> tuple[bytes, str]:
    config = app[CONFIG]
    troubled = [(config.org(r.org_id).name, r.status)  # type: ignore[union-attr]
                for r in answer.reports if r.status not in GOOD]
    html = app[TEMPLATES].get_template("search.html").render(
        page_context(config, q=view.page.params.q, view=view, troubled=troubled,
                     embed=variant == "embed", sort=view.page.params.sort))
    return html.encode(), f"{HTML_TYPE}; charset=utf-8"


def page_context(config: Config, **values: object) -> dict[str, object]:
    context: dict[str, object] = {"q": "", "error": None, "view": None, "troubled": [],
                                  "embed": False, "sort": "relevance",
                                  "base_url": config.server.public_url, "version": __version__,
                                  "product": PRODUCT, "short_name": config.description.short_name}
    context.update(values)
    return context


async def atom_feed(request: web.Request) -> web.Response:
    return await serve_search(request, "atom", _atom)


async def rss_feed(request: web.Request) -> web.Response:
    return await serve_search(request, "rss", _rss)


async def json_feed(request: web.Request) -> web.Response:
    return await serve_search(request, "json", _json, headers=CORS)


async def search_page(request: web.Request) -> web.Response:
    """The page people use; `embed=1` (or /embed) is the compact layout for iframes."""
    config = request.app[CONFIG]
    embed = request.path == "/embed" or request.query.get("embed") in ("1", "true")
    headers = page_security_headers(config)
    if request.query.get("q", "").strip():
        return await serve_search(request, "html", _html, "embed" if embed else "", headers)
    html = request.app[TEMPLATES].get_template("search.html").render(page_context(config, embed=embed))
    return web.Response(text=html, content_type=HTML_TYPE,
                        headers={**headers, "Cache-Control": "public, max-age=300"})


CORS = {"Access-Control-Allow-Origin": "*"}


def page_security_headers(config: Config) -> dict[str, str]:
    """Nothing from upstream may run on the page: no script at all, styles from us only.

    Thumbnails redirect to upstream's image hosts, which are not known in
    advance, hence images from any http(s) origin.
    """
    base = urlsplit(config.server.public_url)
    csp = ("default-src 'none'; img-src 'self' https: http: data:; style-src 'self'; "
           f"form-action 'self' {base.scheme}://{base.netloc}; base-uri 'none'; "
           f"frame-ancestors {' '.join(config.web.frame_ancestors)}")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin"}


async def suggest(request: web.Request) -> web.Response:
    """OpenSearch suggestions: `[prefix, [completions]]`, from memory, never from upstream."""
    caller = request.app[AUTH].caller(request)
    if caller is None:
        return unauthorized("suggest")
    prefix = request.query.get("q", "")
    if len(prefix) > MAX_QUERY or any(ord(c) < 32 for c in prefix):
        return web.json_response({"error": f"q: must be at most {MAX_QUERY} printable characters",
                                  "parameter": "q"}, status=400, headers={**NO_STORE, **CORS})
    found = request.app[SEARCHER].suggestions.suggest(prefix, caller.visible_orgs)
    scope = "private" if caller.authenticated else "public"
    return web.Response(body=json.dumps([prefix, found], ensure_ascii=False).encode(),
                        content_type=SUGGESTIONS_TYPE, charset="utf-8",
                        headers={"Cache-Control": f"{scope}, max-age=60", "Vary": "Authorization", **CORS})


# -- everything else ----------------------------------------------------------------


async def description(request: web.Request) -> web.Response:
    body = render_description(request.app[CONFIG])
    return web.Response(body=body, content_type=DESCRIPTION_TYPE, charset="utf-8",
                        headers={"Cache-Control": "public, max-age=86400", **CORS})


async def windows_connector(request: web.Request) -> web.Response:
    """Opened in Windows Explorer, this adds the service as a federated search location."""
    config = request.app[CONFIG]
    filename = re.sub(r"[^A-Za-z0-9 ._-]", "", config.description.short_name) or "search"
    return web.Response(body=render_osdx(config), content_type=DESCRIPTION_TYPE, charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}.osdx"',
                                 "Cache-Control": "public, max-age=86400"})


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(body=STYLESHEET, content_type="text/css", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600"})


async def thumbnail(request: web.Request) -> web.Response:
    """A stable URL for a video's picture: redirects to upstream's current signed URL.

    Upstream's URLs expire; one that is about to is refreshed by asking the
    org again for the query that last showed the video.
    """
    randtag = request.match_info["randtag"]
    if not RANDTAG_RE.fullmatch(randtag):
        raise web.HTTPNotFound(text="No such video.\n")
    answers = request.app[SEARCHER].answers
    record = await answers.thumbnail_record(randtag)
    if record is None:
        raise web.HTTPNotFound(text="No thumbnail known for this video.\n")
    url = record.get("url")
    if signed_url_expires(url) < time.time() + 60:
        url = await answers.refresh_thumbnail(randtag)
        if url is None or signed_url_expires(url) < time.time():
            raise web.HTTPFound("/icon-64.png", headers={"Cache-Control": "no-store"})
    raise web.HTTPFound(url, headers={"Cache-Control": "private, max-age=60"})


def signed_url_expires(url: str | None) -> float:
    """CloudFront-style `Expires=` (epoch seconds); URLs without one never expire."""
    if not url:
        return 0.0
    values = parse_qs(urlsplit(url).query).get("Expires")
    if not values or not values[0].isdigit():
        return float("inf")
    return float(values[0])


async def icon(request: web.Request) -> web.Response:
    size = int(request.match_info.get("size", "64"))
    return web.Response(body=play_icon(size), content_type="image/png",
                        headers={"Cache-Control": "public, max-age=604800"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=NO_STORE)


def redis_down(cache: Cache) -> bool:
    """Redis is configured but not answering: the in-process cache stands in."""
    return isinstance(cache, ResilientCache) and not cache.redis_up


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    cache = request.app[CACHE]
    if isinstance(cache, ResilientCache):
        m.redis_up.set(0 if redis_down(cache) else 1)
    return web.Response(body=m.exposition(), headers={"Content-Type": METRICS_TYPE, **NO_STORE})


async def readyz(request: web.Request) -> web.Response:
    """Can serve (always, while the process runs); says what is degraded."""
    cache = request.app[CACHE]
    orgs = {org_id: r.status for org_id, r in request.app[SEARCHER].last_reports.items()}
    degraded = [f"cache: {cache.describe()}"] if redis_down(cache) else []
    degraded += [f"org {org_id}: {status}" for org_id, status in orgs.items() if status not in GOOD]
    return web.json_response({"status": "degraded" if degraded else "ok", "cache": cache.describe(),
                              "orgs": orgs, "degraded": degraded}, headers=NO_STORE)
