"""The search handlers: every feed format, the page people use, and suggestions.

Every search format shares one path (`serve_search`): who is calling, whether it
is over its limit, the page cache, the parameters (a 400 naming the one that is
wrong, in the client's format), then one render per page (`pages`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from aggregator.caller import Caller
from aggregator.pages.service import page_key
from aggregator.params import MAX_QUERY, ParamError, parse_search_params
from aggregator.render.formats import HTML, SUGGESTIONS, Format
from aggregator.render.page import render_form
from aggregator.web.accesslog import CLIENT
from aggregator.web.auth import unauthorized
from aggregator.web.errors import NO_STORE, bad_request, too_many
from aggregator.web.httpcache import Resource, respond, respond_resource
from aggregator.web.services import Services
from aggregator.web.state import CONFIG, EMBED_HEADERS, PAGE_HEADERS, SERVICES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def search_handler(fmt: Format) -> Handler:
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
    services = request.app[SERVICES]
    caller = services.auth.caller(request)
    if caller is None:
        return unauthorized(fmt.name)
    if caller.client is not None:
        request[CLIENT] = caller.client.name  # for the JSON access log: the name, never the token
    if services.caller_limits.active:  # tested here: an await costs the warm path even when idle
        refused = await over_limit(request, services, caller, fmt, variant, headers)
        if refused is not None:
            return refused
    # The exact query string (and caller) names a page already validated and
    # rendered: the warm path is this one dict lookup.
    raw_key = raw_page_key(fmt, request.raw_path, caller)
    tally_poll(request, services, fmt, caller, raw_key)
    private = caller.authenticated
    pages, clock, metrics = services.pages, services.clock, services.metrics
    page = pages.kept(raw_key)
    if page is not None:
        metrics.page(fmt.name, "reused")
        return respond(request, page, private=private, hit=True, now=clock(), extra=headers)
    try:
        params = parse_search_params(request.query, caller.visible_orgs)
    except ParamError as exc:
        return bad_request(request, fmt, exc, variant, headers)
    key = page_key(fmt, variant, caller, params)
    page = pages.kept(key)
    if page is not None:
        metrics.page(fmt.name, "reused")
        pages.keep(raw_key, page)
        return respond(request, page, private=private, hit=True, now=clock(), extra=headers)
    # Who asked, for the suggestions' count of distinct callers; counted when a page is rendered,
    # so a query answered from the page cache is under-counted, never over-counted.
    caller_id = services.caller_limits.identity(
        caller, request.remote, request.headers.get("X-Forwarded-For")
    )
    page = await pages.render(key, fmt, variant, caller, params, caller_id)
    metrics.page(fmt.name, "rendered")
    pages.keep(raw_key, page)
    return respond(request, page, private=private, hit=False, now=clock(), extra=headers)


def tally_poll(request: web.Request, services: Services, fmt: Format, caller: Caller, key: str) -> None:
    """A feed was fetched (`key`: its `raw_page_key`): tallied for refresh-ahead. Who asked is
    worked out only for a URL's first poll in a flush interval (`Subscriptions.polled`, which
    counts a repeat itself)."""
    if fmt.subscribable:
        services.subscriptions.polled(
            key,
            fmt.name,
            request.raw_path,
            caller,
            lambda: services.caller_limits.identity(
                caller, request.remote, request.headers.get("X-Forwarded-For")
            ),
        )


def raw_page_key(fmt: Format, raw_path: str, caller: Caller) -> str:
    """The name a page is kept under for the exact request that asked for it (`web.kept` looks it up too)."""
    return f"{fmt.name}{raw_path}#{caller.cache_scope}"


async def search_page(request: web.Request) -> web.Response:
    """The page people use; `embed=1` (or /embed) is the compact layout for iframes."""
    config = request.app[CONFIG]
    embed = request.path == "/embed" or request.query.get("embed") in ("1", "true")
    headers = request.app[EMBED_HEADERS if embed else PAGE_HEADERS]
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
    services = request.app[SERVICES]
    caller = services.auth.caller(request)
    if caller is None:
        return unauthorized(SUGGESTIONS.name)
    refused = await over_limit(request, services, caller, SUGGESTIONS)
    if refused is not None:
        return refused
    prefix = request.query.get("q", "")
    if len(prefix) > MAX_QUERY or any(ord(c) < 32 for c in prefix):
        return web.json_response(
            {"error": f"q: must be at most {MAX_QUERY} printable characters", "parameter": "q"},
            status=400,
            headers=NO_STORE,
        )
    found = services.searcher.suggest(prefix, caller.visible_orgs)
    scope = "private" if caller.authenticated else "public"
    body = json.dumps([prefix, found], ensure_ascii=False).encode()
    answer = Resource.of(body, f"{SUGGESTIONS.media_type}; charset=utf-8", f"{scope}, max-age=60")
    return respond_resource(request, answer, {"Vary": "Authorization"})


async def over_limit(
    request: web.Request,
    services: Services,
    caller: Caller,
    fmt: Format,
    variant: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response | None:
    """A 429 in the client's format when the caller is over its limit; None when it may go on."""
    limits = services.caller_limits
    if not limits.active:
        return None
    retry_after = await limits.admit(caller, request.remote, request.headers.get("X-Forwarded-For"))
    if retry_after is None:
        return None
    services.metrics.caller_rejected.labels("client" if caller.client else "anonymous").inc()
    return too_many(request, fmt, retry_after, variant, headers)
