"""The route table: every path the service answers, and its handler.

Every format in the registry (`render.formats`) gets a route; a format with a
renderer gets the shared search handler, and those a script may read answer
CORS preflights.
"""

from __future__ import annotations

from aiohttp import web

from aggregator.render import links
from aggregator.render.formats import DESCRIPTION, FORMATS, HTML, SUGGESTIONS
from aggregator.render.page import EMBED_SCRIPT_PATH
from aggregator.web import assets, ops
from aggregator.web.oembed import oembed
from aggregator.web.search import Handler, search_handler, search_page, suggest
from aggregator.web.signals import preflight
from aggregator.web.state import CONFIG, RESOURCES
from aggregator.web.webhook import ilos_upload


def add_routes(app: web.Application) -> None:
    app[RESOURCES] = assets.build_resources(app[CONFIG])
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
    app.router.add_get(EMBED_SCRIPT_PATH, assets.embed_script)
    app.router.add_get(links.PATH, assets.result_link)
    app.router.add_get("/thumbnails/{randtag}", assets.thumbnail)
    app.router.add_get("/icon-{size:16|64}.png", assets.icon)
    app.router.add_get("/favicon.ico", assets.icon)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/status", ops.status)
    app.router.add_post("/hooks/ilos/{org_id}/{secret}", ilos_upload)
    app.router.add_get("/oembed", oembed)
