"""What does not depend on a search: the OpenSearch description, the Windows connector, the
stylesheet, icons, and the stable thumbnail URLs."""

from __future__ import annotations

import re

from aiohttp import web

from aggregator.model import RANDTAG_RE
from aggregator.render.description import render_description, render_osdx
from aggregator.render.formats import DESCRIPTION
from aggregator.render.icons import play_icon
from aggregator.render.page import STYLESHEET
from aggregator.search import thumbnails
from aggregator.web.state import CONFIG, SERVICES


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


async def icon(request: web.Request) -> web.Response:
    size = int(request.match_info.get("size", "64"))
    return web.Response(
        body=play_icon(size), content_type="image/png", headers={"Cache-Control": "public, max-age=604800"}
    )


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
