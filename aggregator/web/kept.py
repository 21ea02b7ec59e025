"""Kept feed pages, answered before routing: the warm path as short as aiohttp allows.

A feed reader's repeated poll names a page the service has already rendered: the
exact path and query, from a caller of the same scope. Routing it (the router's
coroutines, the match info, the response signal, the handler's frames) cost more
than the rest of the answer, so the server asks `kept_first` first and hands
every other request, unchanged, to the application. The answer is the one the
routed handler gives (`web.search.serve_search`): the same headers, the same
poll tally and page metrics, the same access line.

Only what can be told apart cheaply and surely is answered here: a GET of a feed
format's literal path whose page is kept for this caller (counted against the
caller's limit, as the route would). Anything else (an escaped path, a 401, a
page to render) takes the route, where every rule applies in full.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aggregator.render.formats import FORMATS
from aggregator.web.accesslog import CLIENT, ROUTE
from aggregator.web.httpcache import respond
from aggregator.web.search import over_limit, raw_page_key, tally_poll
from aggregator.web.signals import X_REQUEST_ID, request_id, stamp
from aggregator.web.state import CORS_POLICY, SERVICES

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]  # a server's request handler


def kept_first(app: web.Application, routed: Handler) -> Handler:
    """A request handler for the server: a kept feed page answered at once, anything else `routed`.

    Called once the app has started (its services are open)."""
    services = app[SERVICES]
    cors = app[CORS_POLICY]
    auth, pages, limits, metrics = services.auth, services.pages, services.caller_limits, services.metrics
    subscriptions, clock = services.subscriptions, services.clock
    # The feeds (pages of results offered for subscription; the HTML page has a handler of its
    # own), with what each answer counts into, looked up once.
    feeds = {
        f.path: (f, metrics.route(f.path), metrics.page_counter(f.name, "reused"))
        for f in FORMATS
        if f.render is not None and f.subscribable
    }

    # With every origin allowed, CORS is the same for every answer: appended as one multidict (the
    # answer from `respond` has none yet), without asking the policy or replacing as `stamp` must.
    any_origin = CIMultiDictProxy(CIMultiDict(cors.headers({}))) if cors.any else None

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        raw_path = request.raw_path
        path, _, _ = raw_path.partition("?")
        feed = feeds.get(path)
        if feed is None or request.method != "GET":
            return await routed(request)
        fmt, counted, reused = feed
        assert isinstance(request, web.Request)  # what the app's request factory makes
        caller = auth.caller(request)
        if caller is None:
            return await routed(request)
        key = raw_page_key(fmt, raw_path, caller)
        page = pages.kept(key)
        if page is None:
            return await routed(request)
        client = caller.client
        if client is not None:
            request[CLIENT] = client.name
        request[ROUTE] = counted
        if limits.active:  # counted here, once: the route is no longer taken
            refused = await over_limit(request, services, caller, fmt)
            if refused is not None:
                stamp(request, path, refused, cors)
                return refused
        if not subscriptions.polled_again(key):
            tally_poll(request, services, fmt, caller, key)
        reused()
        response = respond(request, page, private=client is not None, hit=True, now=clock())
        if any_origin is not None:  # what `stamp` adds to a 200 or 304 when every origin gets the same CORS
            response.headers.extend(any_origin)
            response.headers[X_REQUEST_ID] = request_id(request.headers)
        else:
            stamp(request, path, response, cors)
        return response

    return handle
