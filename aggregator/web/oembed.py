"""oEmbed 1.0 (https://oembed.com/) for the service's own search URLs: paste one into WordPress,
Drupal, Moodle or Confluence, and the CMS embeds the search, with no plugin.

`GET /oembed?url=…&format=json|xml&maxwidth=&maxheight=` answers a `rich` object whose `html`
is an iframe of `/embed` for that search, after a hidden `<blockquote>` linking to the search.
The blockquote is WordPress's: a discovered embed with one gets WordPress's host script
(wp-embed.js), which shows the link until the frame speaks, and then sizes the frame and opens
the links it asks for (templates/embed.js); other consumers honour `hidden` and show the frame.

Only URLs of this service's search page (`/` or `/embed` under `server.public_url`, with a
`q`) are answered: any other is a 404, as the spec says for a URL the provider has no response
for; an unknown format is a 501. A URL carrying a `key=` is refused (401, the spec's answer for
a private resource): the CMS would publish the token in every page it renders. No upstream search is ever started here: `thumbnail_url` is given
only when this process has the search's page rendered already.
"""

from __future__ import annotations

import html
import json
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.sax.saxutils import escape

from aiohttp import web

from aggregator.pages.service import page_key
from aggregator.params import ParamError, parse_search_params
from aggregator.render.formats import HTML
from aggregator.web.errors import NO_STORE
from aggregator.web.state import CONFIG, SERVICES

WIDTH, HEIGHT = 640, 480  # the embed's size when the consumer sets no bound
THUMB_WIDTH, THUMB_HEIGHT = 180, 102
MIN_SIDE = 120
CACHE_AGE = 86_400  # seconds a consumer may keep the answer: the embed itself stays live
SEARCH_PATHS = ("/", "/embed")


def _refusal(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=NO_STORE)


def _bound(raw: str | None, default: int) -> int | None:
    """A maxwidth or maxheight: a whole number of pixels; None when it is not one."""
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 6:
        return None
    return min(default, int(raw))


async def oembed(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "xml"):
        return _refusal(501, "format: only json and xml are offered")
    given = request.query.get("url", "")
    public = urlsplit(config.server.public_url)
    try:
        wanted = urlsplit(given)
    except ValueError:
        return _refusal(404, "url: not a search of this service")
    base_path = public.path.rstrip("/")
    query = dict(parse_qsl(wanted.query))
    if (
        wanted.scheme not in ("http", "https")
        or wanted.netloc.lower() != public.netloc.lower()
        or not wanted.path.startswith(base_path)
        or (wanted.path.removeprefix(base_path) or "/") not in SEARCH_PATHS
        or not query.get("q", "").strip()
    ):
        return _refusal(404, "url: not a search of this service")
    if "key" in {name.lower().split("[", 1)[0] for name in query}:
        return _refusal(401, "url: carries a token; embed a search without key=")
    width, height = (
        _bound(request.query.get("maxwidth"), WIDTH),
        _bound(request.query.get("maxheight"), HEIGHT),
    )
    if width is None or height is None:
        return _refusal(400, "maxwidth and maxheight: whole numbers of pixels")
    width, height = max(MIN_SIDE, width), max(MIN_SIDE, height)
    query.pop("embed", None)
    src = f"{config.server.public_url}/embed?{urlencode(query)}"
    page = f"{config.server.public_url}/?{urlencode(query)}"
    title = f"Videos for “{query['q']}” · {config.description.short_name}"
    answer = {
        "version": "1.0",
        "type": "rich",
        "title": title,
        "provider_name": config.description.short_name,
        "provider_url": f"{config.server.public_url}/",
        "cache_age": CACHE_AGE,
        "width": width,
        "height": height,
        "html": (
            f'<blockquote hidden><a href="{html.escape(page)}">{html.escape(title)}</a></blockquote>'
            f'<iframe src="{html.escape(src)}" width="{width}" height="{height}" title="{html.escape(title)}" '
            'loading="lazy" style="border:0"></iframe>'
        ),
    }
    thumbnail = _cached_thumbnail(request, query)
    if thumbnail is not None:
        # ilos's thumbnails are 180 x 102 (its feeds say so); the spec wants both sides with the URL.
        answer.update(thumbnail_url=thumbnail, thumbnail_width=THUMB_WIDTH, thumbnail_height=THUMB_HEIGHT)
    headers = {"Cache-Control": f"public, max-age={CACHE_AGE}"}
    if fmt == "json":
        body = json.dumps(answer, ensure_ascii=False).encode()
        return web.Response(body=body, content_type="application/json", charset="utf-8", headers=headers)
    fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in answer.items())
    xml = f'<?xml version="1.0" encoding="utf-8" standalone="yes"?>\n<oembed>{fields}</oembed>\n'
    return web.Response(text=xml, content_type="text/xml", charset="utf-8", headers=headers)


def _cached_thumbnail(request: web.Request, query: dict[str, str]) -> str | None:
    """The first result's thumbnail if this process has the search's page (or its embed) rendered:
    never a search of its own, so a pasted URL costs ilos nothing."""
    services = request.app[SERVICES]
    caller = services.auth.caller(request)
    if caller is None:
        return None
    try:
        params = parse_search_params(query, caller.visible_orgs)
    except ParamError:
        return None
    for variant in ("embed", ""):
        page = services.pages.kept(page_key(HTML, variant, caller, params))
        if page is not None and page.thumbnail:
            return page.thumbnail
    return None
