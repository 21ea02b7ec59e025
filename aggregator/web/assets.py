"""What does not depend on a search: the OpenSearch description, the Windows connector, the
stylesheet and the compact page's script, icons, the stable thumbnail URLs and the signed
result links of framed pages."""

from __future__ import annotations

import re

from aiohttp import web

from aggregator.config import Config
from aggregator.model import RANDTAG_RE
from aggregator.render import links
from aggregator.render.description import render_description, render_osdx
from aggregator.render.formats import DESCRIPTION
from aggregator.render.icons import play_icon
from aggregator.render.page import EMBED_SCRIPT, STYLESHEET
from aggregator.search import thumbnails
from aggregator.web.httpcache import Resource, respond_resource
from aggregator.web.state import CONFIG, RESOURCES, SERVICES

DESCRIPTION_TYPE = f"{DESCRIPTION.media_type}; charset=utf-8"


def build_resources(config: Config) -> dict[str, Resource]:
    """Every body that depends on the config alone, made once per app with its validators."""
    day = "public, max-age=86400"
    return {
        "description": Resource.of(render_description(config), DESCRIPTION_TYPE, day),
        "osdx": Resource.of(render_osdx(config), DESCRIPTION_TYPE, day),
        "stylesheet": Resource.of(STYLESHEET, "text/css; charset=utf-8", "public, max-age=3600"),
        "embed-script": Resource.of(EMBED_SCRIPT, "text/javascript; charset=utf-8", "public, max-age=3600"),
        # PNGs are compressed already: validators only.
        "icon-16": Resource.of(play_icon(16), "image/png", "public, max-age=604800", compress=False),
        "icon-64": Resource.of(play_icon(64), "image/png", "public, max-age=604800", compress=False),
    }


async def description(request: web.Request) -> web.Response:
    return respond_resource(request, request.app[RESOURCES]["description"])


async def windows_connector(request: web.Request) -> web.Response:
    """Opened in Windows Explorer, this adds the service as a federated search location."""
    filename = re.sub(r"[^A-Za-z0-9 ._-]", "", request.app[CONFIG].description.short_name) or "search"
    disposition = f'attachment; filename="{filename}.osdx"'
    return respond_resource(request, request.app[RESOURCES]["osdx"], {"Content-Disposition": disposition})


async def stylesheet(request: web.Request) -> web.Response:
    return respond_resource(request, request.app[RESOURCES]["stylesheet"])


async def embed_script(request: web.Request) -> web.Response:
    return respond_resource(request, request.app[RESOURCES]["embed-script"])


async def result_link(request: web.Request) -> web.Response:
    """A framed page's way out of a WordPress sandbox: a redirect only where a page of ours led."""
    target = links.verified_target(links.link_key(request.app[CONFIG]), request.query)
    if target is None:
        raise web.HTTPNotFound(text="No such link.\n")
    raise web.HTTPSeeOther(target, headers={"Cache-Control": "public, max-age=86400"})


async def icon(request: web.Request) -> web.Response:
    size = request.match_info.get("size", "64")
    return respond_resource(request, request.app[RESOURCES][f"icon-{size}"])


async def thumbnail(request: web.Request) -> web.Response:
    """A stable URL for a video's picture: redirects to upstream's current signed URL."""
    randtag = request.match_info["randtag"]
    if not RANDTAG_RE.fullmatch(randtag):
        raise web.HTTPNotFound(text="No such video.\n")
    config = request.app[CONFIG]
    secret = thumbnails.scope_secret(config)
    scope = thumbnails.scope_of(secret, [o.id for o in config.orgs], dict(request.query))
    if scope is None:
        raise web.HTTPNotFound(text="No such video.\n")
    redirect = await request.app[SERVICES].searcher.thumbnail(randtag, scope)
    if redirect is None:
        raise web.HTTPNotFound(text="No thumbnail known for this video.\n")
    cache_control = "private, max-age=60" if redirect.cacheable else "no-store"
    raise web.HTTPFound(redirect.location, headers={"Cache-Control": cache_control})
