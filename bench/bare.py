"""`python -m bench.bare FILE PORT CONTENT_TYPE [log]`: the yardstick, a bare aiohttp handler
returning FILE's bytes. No routing logic, no headers beyond the content type.
With `log`, aiohttp's own access log is written to stderr, as a logged service would."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from aiohttp import web


def bare_app(body: bytes, content_type: str) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/search.atom", handler)
    return app


def main(argv: list[str]) -> None:
    app = bare_app(Path(argv[0]).read_bytes(), argv[2])
    if argv[3:] == ["log"]:
        logging.basicConfig(level=logging.INFO)
        web.run_app(app, host="127.0.0.1", port=int(argv[1]), print=None)
    else:
        web.run_app(app, host="127.0.0.1", port=int(argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
