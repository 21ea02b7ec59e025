"""CORS for the feeds, suggestions and the description (contract: "HTTP correctness for every client").

Intranet widgets and SharePoint web parts fetch feeds from the browser, some
with `Authorization: Bearer`, which makes the browser send a preflight
`OPTIONS` first. `[web] cors_origins` (default `["*"]`) says which origins may
read; with a list, the answer depends on the request's `Origin` and says so
with `Vary: Origin`. The Fetch standard's CORS protocol:
https://fetch.spec.whatwg.org/#http-cors-protocol
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOW_METHODS = "GET, HEAD, OPTIONS"
# `*` in Access-Control-Allow-Headers does not cover Authorization, so it is named.
ALLOW_HEADERS = "Authorization, If-None-Match, If-Modified-Since, X-Request-Id"
EXPOSE_HEADERS = "ETag, Last-Modified, Server-Timing, Retry-After, Link, X-Request-Id"
PREFLIGHT_MAX_AGE = "86400"


class Cors:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/").lower() for o in origins if o != "*")
        self._any_headers = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            "Timing-Allow-Origin": "*",
        }

    def headers(self, request_headers: Mapping[str, str]) -> dict[str, str]:
        """What an answer to this request says about who may read it; {} for an origin not allowed."""
        if self.any:
            return self._any_headers
        origin = request_headers.get("Origin")
        vary = {"Vary": "Origin"}
        if origin is None or origin.rstrip("/").lower() not in self.origins:
            return vary
        return {
            **vary,
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            "Timing-Allow-Origin": origin,
        }

    def preflight(self, request_headers: Mapping[str, str]) -> dict[str, str]:
        headers = dict(self.headers(request_headers))
        if "Access-Control-Allow-Origin" in headers:
            headers.update(
                {
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                }
            )
        return headers
