"""The access log: one line per request on stderr, with client tokens redacted.

Written without the `logging` machinery, in batches flushed a moment later:
the logging module costs about as much per request as serving a cached page,
and the warm path is the product's busiest code.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import weakref
from typing import ClassVar
from urllib.parse import quote, unquote, unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

from aggregator.metrics import METRICS, RouteRequests
from aggregator.web.signals import X_REQUEST_ID

FLUSH_DELAY = 0.05
HOOKS_PREFIX = "/hooks/"
_SECRET_NAMES = frozenset({"key", "api_key", "token"})
_SEPARATORS_RE = re.compile(r"([&;])")


def redact(path_qs: str) -> str:
    """Client tokens may ride in `key=`; they go nowhere but the check that reads them.

    Parameter names are decoded before they are compared (`k%65y=` is `key=`
    to the server, so it is to the log too). The common case, a query with no
    escapes and no such name, is one scan and no parsing.
    """
    path, sep, query = path_qs.partition("?")
    if "%" in path or "//" in path or path.startswith(HOOKS_PREFIX):
        path = _redact_hook_secret(path)
        path_qs = path + sep + query
    if not sep:
        return path_qs
    lowered = query.lower()
    if "%" not in query and "+" not in query and "key" not in lowered and "token" not in lowered:
        return path_qs
    parts = _SEPARATORS_RE.split(query)
    for i in range(0, len(parts), 2):
        name, eq, _ = parts[i].partition("=")
        # `key[]=T` is `key=T` to many frameworks: the name before any bracket decides.
        if eq and unquote_plus(name).strip().lower().split("[", 1)[0] in _SECRET_NAMES:
            parts[i] = f"{name}=REDACTED"
    return f"{path}?{''.join(parts)}"


_PLAIN_PATHS: set[str] = set()  # paths logged before that had nothing to redact: feed readers repeat theirs
MAX_PLAIN_PATHS = 4096


def _logged_path(raw_path: str) -> str:
    """`redact(raw_path)`, remembering the paths that had nothing to redact (never one that had)."""
    if raw_path in _PLAIN_PATHS:
        return raw_path
    logged = redact(raw_path)
    if logged == raw_path:
        if len(_PLAIN_PATHS) >= MAX_PLAIN_PATHS:
            _PLAIN_PATHS.clear()
        _PLAIN_PATHS.add(raw_path)
    return logged


def _redact_hook_secret(path: str) -> str:
    """/hooks/ilos/{org}/{secret}: everything after the org goes, judged on the path as the router
    sees it (percent-escapes decoded, as RFC 3986 makes `%68` and `h` the same; repeated slashes
    merged), so no spelling of it (`//hooks/…`, `/%68ooks/…`, a trailing slash or more
    segments) reaches the log."""
    segments = [s for s in unquote(path).split("/") if s]
    if segments[:1] != ["hooks"]:
        return path
    kept = segments[:3]  # hooks, ilos, {org}
    return "/" + "/".join(quote(s, safe="") for s in kept) + ("/REDACTED" if len(segments) > 3 else "")


class AccessLogger(AbstractAccessLogger):
    # Shared by every logger of the process: one buffer, one pending flush.
    json_lines: ClassVar[bool] = False
    write_lines: ClassVar[bool] = True  # server.access_log; requests are counted for /metrics either way
    _lines: ClassVar[list[str]] = []
    _flush_scheduled: ClassVar[bool] = False
    _stamp_second: ClassVar[int] = -1
    _stamp: ClassVar[str] = ""
    # Per route: where its requests are counted (None outside our app) and its name (resolving
    # both took a third of a line's cost). Weak: an app's routes go with the app (tests make hundreds).
    _routes: ClassVar[weakref.WeakKeyDictionary[AbstractRoute, tuple[RouteRequests | None, str]]] = (
        weakref.WeakKeyDictionary()
    )

    @property
    def enabled(self) -> bool:
        return True

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        cls = AccessLogger
        # A request aiohttp could not parse was never routed: its match_info is unset, and the
        # public properties assert on that, so the attribute behind them is read.
        match_info = getattr(request, "_match_info", None)
        route_name = "-"
        if match_info is not None:
            route = match_info.route
            counted = cls._routes.get(route)
            if counted is None:
                counted = cls._routes[route] = _counted(match_info)
            if counted[0] is not None:
                counted[0].observe(response.status, time_taken)
            route_name = counted[1]
        elif (kept := request.get(ROUTE)) is not None:  # answered before routing (`web.kept`)
            kept.observe(response.status, time_taken)
            route_name = kept.name
        if not cls.write_lines:
            return
        now = int(time.time())
        if now != cls._stamp_second:
            cls._stamp_second = now
            cls._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        request_id = response.headers.get(X_REQUEST_ID, "-")
        if cls.json_lines:
            cls._lines.append(_json_line(cls._stamp, request, response, time_taken, request_id, route_name))
        else:
            cls._lines.append(
                f'{cls._stamp} access {request.remote} "{request.method} {_logged_path(request.raw_path)}" '
                f"{response.status} {response.body_length} {time_taken * 1000:.1f}ms id={request_id}\n"
            )
        if not cls._flush_scheduled:
            cls._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, flush)
            except RuntimeError:
                flush()


def _counted(match_info: UrlMappingMatchInfo) -> tuple[RouteRequests | None, str]:
    """Where a routed request is counted (None outside our app) and its route's name."""
    resource = match_info.route.resource
    name = resource.canonical if resource is not None else "-"
    metrics = match_info.current_app.get(METRICS)
    return (metrics.route(name) if metrics is not None else None), name


CLIENT = web.RequestKey("client", str)  # the [[clients]] name a request came with, for the log
# Where a request answered before routing (`web.kept`), which has no match info, is counted.
ROUTE = web.RequestKey[RouteRequests]("route")


def _json_line(
    stamp: str,
    request: web.BaseRequest,
    response: web.StreamResponse,
    taken: float,
    request_id: str,
    route: str,
) -> str:
    """The access line as one JSON object: route, status, time, client name (never its token), org outcomes."""
    record = {
        "time": stamp,
        "type": "access",
        "request_id": request_id,
        "remote": request.remote,
        "method": request.method,
        "path": _logged_path(request.raw_path),
        "route": None if route == "-" else route,
        "status": response.status,
        "bytes": response.body_length,
        "ms": round(taken * 1000, 1),
        "client": request.get(CLIENT),
        "orgs": org_outcomes(response.headers.get("Server-Timing", "")),
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def org_outcomes(server_timing: str) -> dict[str, str]:
    """`org-<id>` -> its desc, from our own Server-Timing header."""
    out = {}
    for metric in server_timing.split(","):
        name, _, rest = metric.strip().partition(";")
        if name.startswith("org-") and 'desc="' in rest:
            out[name[4:]] = rest.split('desc="', 1)[1].split('"', 1)[0]
    return out


def flush() -> None:
    lines, AccessLogger._lines = AccessLogger._lines, []
    AccessLogger._flush_scheduled = False
    if lines:
        try:
            sys.stderr.write("".join(lines))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
