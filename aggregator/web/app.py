"""The HTTP service: the app factory, its routes and the signals every response passes through.

`create_app(config)` builds an application whose services (`services.open_services`,
the composition root) are opened and closed in `cleanup_ctx`, with the background
chores beside them. Routes come from the format registry (`render.formats`); the
handlers live by concern in `search`, `assets`, `ops` and `webhook`.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web

from aggregator.config import Config
from aggregator.freshness import refresher
from aggregator.metrics import METRICS, Metrics
from aggregator.model import Clock
from aggregator.render.formats import DESCRIPTION, FORMATS, HTML, SUGGESTIONS
from aggregator.render.page import security_headers
from aggregator.render.warmup import warm_up_renderers
from aggregator.web import assets, ops
from aggregator.web.cors import Cors
from aggregator.web.search import Handler, search_handler, search_page, suggest
from aggregator.web.services import open_services, run_background
from aggregator.web.state import CONFIG, CORS_POLICY, PAGE_HEADERS, SERVICES
from aggregator.web.webhook import ilos_upload

_SAFE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
CORS_PATHS = frozenset(f.path for f in FORMATS if f.cors)


def create_app(
    config: Config, *, clock: Clock = time.time, refresh_every: float | None = refresher.INTERVAL
) -> web.Application:
    """`clock` (epoch seconds) decides every expiry; tests pass their own to move time.

    `refresh_every`: seconds between refresh-ahead passes; None runs none (tests drive
    `app[SERVICES].refresher.run_once()` themselves).
    """
    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(_no_store_errors)
    app.on_response_prepare.append(_cors)
    app.on_response_prepare.append(_request_id)
    app[CORS_POLICY] = Cors(config.web.cors_origins)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[METRICS].formats_by_route = {f.path: f.name for f in FORMATS} | {"/embed": HTML.name}
    app[PAGE_HEADERS] = security_headers(config.server.public_url, config.web.frame_ancestors)

    async def services(app: web.Application) -> AsyncIterator[None]:
        async with open_services(config, clock, app[METRICS]) as built:
            app[SERVICES] = built
            await warm_up_renderers(config)
            async with run_background(built, refresh_every):
                yield

    app.cleanup_ctx.append(services)
    special: dict[str, Handler] = {
        HTML.name: search_page,
        SUGGESTIONS.name: suggest,
        DESCRIPTION.name: assets.description,
    }
    for fmt in FORMATS:
        app.router.add_get(fmt.path, special.get(fmt.name) or search_handler(fmt))
        if fmt.cors:
            app.router.add_route("OPTIONS", fmt.path, preflight)
    app.router.add_get("/embed", search_page)
    app.router.add_get("/search.osdx", assets.windows_connector)
    app.router.add_get("/static/search.css", assets.stylesheet)
    app.router.add_get("/thumbnails/{randtag}", assets.thumbnail)
    app.router.add_get("/icon-{size:16|64}.png", assets.icon)
    app.router.add_get("/favicon.ico", assets.icon)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/status", ops.status)
    app.router.add_post("/hooks/ilos/{org_id}/{secret}", ilos_upload)
    return app


async def preflight(request: web.Request) -> web.Response:
    """The browser's OPTIONS before a cross-origin GET with Authorization: no token needed to ask."""
    return web.Response(status=204, headers=request.app[CORS_POLICY].preflight(request.headers))


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
