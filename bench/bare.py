"""`python -m bench.bare FILE PORT CONTENT_TYPE [log]`: the yardstick, a bare aiohttp handler
returning FILE's bytes. No routing logic, no headers beyond the content type.
With `log`, aiohttp's own access log is written to stderr, as a logged service would."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from aiohttp import web

body = Path(sys.argv[1]).read_bytes()
content_type = sys.argv[3]


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})


app = web.Application()
app.router.add_get("/search.atom", handler)
if sys.argv[4:] == ["log"]:
    logging.basicConfig(level=logging.INFO)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
else:
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
