"""The HTTP service: app factory, resources and handlers.

`create_app(config)` builds an application whose client session, parse
workers and cache are opened and closed in `cleanup_ctx`. Handlers validate
every parameter first (a 400 naming it, in the client's format), ask the
`Searcher`, and render one page; per-org outcomes go out as `Server-Timing`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import jinja2
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from aggregator import PRODUCT, __version__, cache as cache_keys
from aggregator.atom import ATOM_TYPE, DESCRIPTION_TYPE, render_atom
from aggregator.cache import Cache, MemoryCache
from aggregator.config import Config
from aggregator.description import render_description
from aggregator.icons import play_icon
from aggregator.paging import page_of
from aggregator.params import ParamError, SearchParams, parse_search_params
from aggregator.parsing import RANDTAG_RE
from aggregator.presentation import View
from aggregator.search import SearchAnswer, Searcher, new_parse_executor, warm_up
from aggregator.upstream import new_session
from aggregator.videos import format_duration

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
CACHE = web.AppKey("cache", Cache)
SEARCHER = web.AppKey("searcher", Searcher)
TEMPLATES = web.AppKey("templates", jinja2.Environment)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
NO_STORE = {"Cache-Control": "no-store"}


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    app[TEMPLATES].filters["duration"] = format_duration
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/", search_page)
    app.router.add_get("/search.atom", atom_feed)
    app.router.add_get("/opensearch.xml", description)
    app.router.add_get("/thumbnails/{randtag}", thumbnail)
    app.router.add_get("/icon-{size:16|64}.png", icon)
    app.router.add_get("/favicon.ico", icon)
    app.router.add_get("/healthz", healthz)
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = new_session()
    executor = new_parse_executor(config.server.parse_workers)
    warm_up(executor, config.server.parse_workers)
    cache = MemoryCache(config.cache.memory_max_entries)
    app[CACHE] = cache
    app[SEARCHER] = Searcher(config, session, cache, executor)
    try:
        yield
    finally:
        await session.close()
        executor.shutdown(wait=False, cancel_futures=True)


# -- errors -----------------------------------------------------------------------


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Errors are never cached, and never show a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            exc.headers["Cache-Control"] = "no-store"
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(status=500, text="Internal error: the problem is logged.\n", headers=NO_STORE)


def bad_request(fmt: str, error: ParamError) -> web.Response:
    """A 400 that names the parameter and its rule, in the format the client asked for."""
    if fmt == "json":
        return web.json_response({"error": str(error), "parameter": error.param}, status=400,
                                 headers=NO_STORE)
    return web.Response(status=400, text=f"Bad request: {error}\n", headers=NO_STORE)


# -- search -----------------------------------------------------------------------


def visible_orgs(request: web.Request) -> tuple[str, ...]:
    return tuple(o.id for o in request.app[CONFIG].orgs)


async def run_search(request: web.Request, params: SearchParams) -> tuple[SearchAnswer, View]:
    config = request.app[CONFIG]
    answer = await request.app[SEARCHER].search(params.q, params.orgs, params.sort)
    view = View(page=page_of(params, answer.results), base_url=config.server.public_url,
                org_names={o.id: o.name for o in config.orgs}, all_orgs=visible_orgs(request))
    return answer, view


def server_timing(answer: SearchAnswer) -> str:
    return ", ".join(f'org-{r.org_id};dur={r.elapsed_ms:.1f};desc="{r.status}"' for r in answer.reports)


async def atom_feed(request: web.Request) -> web.Response:
    try:
        params = parse_search_params(request.query, visible_orgs(request))
    except ParamError as exc:
        return bad_request("atom", exc)
    answer, view = await run_search(request, params)
    return web.Response(body=render_atom(view), content_type=ATOM_TYPE, charset="utf-8",
                        headers={"Server-Timing": server_timing(answer)})


async def search_page(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    context: dict[str, object] = {"q": "", "error": None, "view": None, "answer": None,
                                  "base_url": config.server.public_url, "version": __version__,
                                  "product": PRODUCT}
    headers: dict[str, str] = {}
    status = 200
    if request.query.get("q", "").strip():
        try:
            params = parse_search_params(request.query, visible_orgs(request))
        except ParamError as exc:
            context["error"] = str(exc)
            context["q"] = request.query.get("q", "")[:256]
            status = 400
            headers.update(NO_STORE)
        else:
            answer, view = await run_search(request, params)
            context.update(q=params.q, view=view, answer=answer,
                           troubled=[config.org(r.org_id).name for r in answer.reports  # type: ignore[union-attr]
                                     if r.status not in ("ok", "cached")])
            headers["Server-Timing"] = server_timing(answer)
    html = request.app[TEMPLATES].get_template("search.html").render(context)
    return web.Response(text=html, content_type="text/html", status=status, headers=headers)


# -- everything else ----------------------------------------------------------------


async def description(request: web.Request) -> web.Response:
    body = render_description(request.app[CONFIG].server.public_url)
    return web.Response(body=body, content_type=DESCRIPTION_TYPE, charset="utf-8",
                        headers={"Cache-Control": "public, max-age=86400"})


async def thumbnail(request: web.Request) -> web.Response:
    """A stable URL for a video's picture: redirects to upstream's current signed URL."""
    randtag = request.match_info["randtag"]
    if not RANDTAG_RE.fullmatch(randtag):
        raise web.HTTPNotFound(text="No such video.\n")
    url = await request.app[CACHE].get(cache_keys.key("thumb", randtag))
    if url is None:
        raise web.HTTPNotFound(text="No thumbnail known for this video.\n")
    raise web.HTTPFound(url.decode(), headers={"Cache-Control": "private, max-age=300"})


async def icon(request: web.Request) -> web.Response:
    size = int(request.match_info.get("size", "64"))
    return web.Response(body=play_icon(size), content_type="image/png",
                        headers={"Cache-Control": "public, max-age=604800"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=NO_STORE)


# -- logging --------------------------------------------------------------------------

_SECRET_PARAM_RE = re.compile(r"((?:^|[?&;])(?:key|api_key|token)=)[^&;]*", re.IGNORECASE)


def redact(path_qs: str) -> str:
    """Client tokens may ride in `key=`; they go nowhere but the check that reads them."""
    return _SECRET_PARAM_RE.sub(r"\1REDACTED", path_qs)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %s %.1fms', request.remote, request.method,
                         redact(request.path_qs), response.status, response.body_length, time * 1000)
