"""`python -m bench.bare FILE PORT CONTENT_TYPE`: the yardstick, a bare aiohttp handler
returning FILE's bytes. No routing logic, no headers beyond the content type."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

body = Path(sys.argv[1]).read_bytes()
content_type = sys.argv[3]


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": content_type})


app = web.Application()
app.router.add_get("/search.atom", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
