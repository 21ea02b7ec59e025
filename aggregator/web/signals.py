"""What every response passes through (aiohttp's `on_response_prepare`), errors included.

Signals rather than middlewares: they cost less on the warm path, and aiohttp
already answers an unhandled exception with a bare 500 and logs it, never
showing a traceback.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping, MutableMapping

from aiohttp import web
from multidict import istr

from aggregator.render.formats import FORMATS
from aggregator.web.cors import Cors
from aggregator.web.state import CORS_POLICY

_SAFE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A new request id is this process's random prefix and a counter: unique across processes, and
# no system call per request (a random one each cost 2.4 % of a cached page's CPU). An id is for
# tying a response to its log line, not a secret. The counter is written in decimal: formatting
# it to a fixed width in hex cost twice as much.
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
CORS_PATHS = frozenset(f.path for f in FORMATS if f.cors)
X_REQUEST_ID = istr("X-Request-Id")  # as aiohttp's `hdrs` names headers: found without folding case


async def preflight(request: web.Request) -> web.Response:
    """The browser's OPTIONS before a cross-origin GET with Authorization: no token needed to ask."""
    return web.Response(status=204, headers=request.app[CORS_POLICY].preflight(request.headers))


async def every_response(request: web.Request, response: web.StreamResponse) -> None:
    """What every answer carries, errors (aiohttp's own 404s, 405s and 500s) included.

    One signal for all three, not three: each is a coroutine aiohttp creates and
    awaits per response, and a cached page's whole answer costs ~40 us.
    """
    stamp(request, request.path, response, request.app[CORS_POLICY])


def stamp(request: web.BaseRequest, path: str, response: web.StreamResponse, cors: Cors) -> None:
    """The headers every answer carries: no-store on errors, CORS where a script may read, a request id.

    Called by the signal for routed answers and by `web.kept` for the pages it answers before routing.
    """
    headers = response.headers
    if response.status >= 400:
        headers["Cache-Control"] = "no-store"  # errors are never cached
    if path in CORS_PATHS:
        _cors(cors, request, headers)
    headers[X_REQUEST_ID] = request_id(request.headers)


def request_id(request_headers: Mapping[str, str]) -> str:
    """The caller's own X-Request-Id if it is safe to repeat, else a new one. The access line
    carries the same id, which ties a response to its log line."""
    given = request_headers.get(X_REQUEST_ID)
    if given is None or not _SAFE_ID_RE.fullmatch(given):
        return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"
    return given


def _cors(cors: Cors, request: web.BaseRequest, headers: MutableMapping[str, str]) -> None:
    """Who may read the feeds, suggestions and description from a script, errors included."""
    allowed = cors.headers(request.headers)
    if "Vary" in allowed and "Vary" in headers:
        headers["Vary"] = f"{headers['Vary']}, Origin"
        allowed = {k: v for k, v in allowed.items() if k != "Vary"}
    headers.update(allowed)
