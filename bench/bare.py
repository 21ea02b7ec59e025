"""`python -m bench.bare FILE PORT CONTENT_TYPE [log | floor HEADERS_JSON]`: the yardstick, a bare
aiohttp handler returning FILE's bytes. No routing logic, no headers beyond the content type.
With `log`, aiohttp's own access log is written to stderr, as a logged service would.

With `floor`, the handler sends the headers in HEADERS_JSON (a cached page's, as the service
sent them) and our access logger writes its line: what any app on aiohttp that answers with
the same headers and log line costs at least, with no lookup, no validators, no metrics."""

from __future__ import annotations

import json
import logging
import sys
import urllib.request
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

ADDED_BY_AIOHTTP = frozenset({"content-length", "date", "server", "connection"})


def cached_page(url: str) -> tuple[bytes, dict[str, str]]:
    """The service's page at `url` once it is cached (asked twice), and the headers it was sent
    with but those aiohttp adds to every answer: what the bare handler and the floor serve."""
    with urllib.request.urlopen(url) as resp:
        resp.read()  # rendered; the next answer is the cached page's
    with urllib.request.urlopen(url) as resp:
        return resp.read(), {k: v for k, v in resp.headers.items() if k.lower() not in ADDED_BY_AIOHTTP}


def bare_app(body: bytes, content_type: str, headers: dict[str, str] | None = None) -> web.Application:
    sent = CIMultiDictProxy(CIMultiDict(headers or {"Content-Type": content_type}))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=sent)

    app = web.Application()
    app.router.add_get("/search.atom", handler)
    return app


def main(argv: list[str]) -> None:
    if argv[3:4] == ["floor"]:
        from aggregator.web.accesslog import AccessLogger

        app = bare_app(Path(argv[0]).read_bytes(), argv[2], json.loads(argv[4]))
        web.run_app(app, host="127.0.0.1", port=int(argv[1]), access_log_class=AccessLogger, print=None)
        return
    app = bare_app(Path(argv[0]).read_bytes(), argv[2])
    if argv[3:] == ["log"]:
        logging.basicConfig(level=logging.INFO)
        web.run_app(app, host="127.0.0.1", port=int(argv[1]), print=None)
    else:
        web.run_app(app, host="127.0.0.1", port=int(argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
