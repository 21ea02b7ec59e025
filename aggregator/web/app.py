"""The HTTP service: the app factory, its routes and the signals every response passes through.

`create_app(config)` builds an application whose services (`services.open_services`,
the composition root) are opened and closed in `cleanup_ctx`, with the background
chores beside them. The route table is `routes`; the handlers live by concern in
`search`, `assets`, `ops` and `webhook`; `signals` are what every response passes through.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from aggregator.config import Config
from aggregator.freshness import refresher
from aggregator.metrics import METRICS, Metrics
from aggregator.model import Clock
from aggregator.render.formats import FORMATS, HTML
from aggregator.render.page import security_headers
from aggregator.render.warmup import warm_up_renderers
from aggregator.web import signals
from aggregator.web.cors import Cors
from aggregator.web.routes import add_routes
from aggregator.web.services import open_services, run_background
from aggregator.web.state import CONFIG, CORS_POLICY, EMBED_HEADERS, PAGE_HEADERS, SERVICES


def create_app(
    config: Config, *, clock: Clock = time.time, refresh_every: float | None = refresher.INTERVAL
) -> web.Application:
    """`clock` (epoch seconds) decides every expiry; tests pass their own to move time.

    `refresh_every`: seconds between refresh-ahead passes; None runs none (tests drive
    `app[SERVICES].refresher.run_once()` themselves).
    """
    app = web.Application(client_max_size=64 * 1024)
    app.on_response_prepare.append(signals.every_response)
    app[CORS_POLICY] = Cors(config.web.cors_origins)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[METRICS].formats_by_route = {f.path: f.name for f in FORMATS} | {"/embed": HTML.name}
    app[PAGE_HEADERS] = security_headers(config.server.public_url, config.web.frame_ancestors)
    app[EMBED_HEADERS] = security_headers(config.server.public_url, config.web.frame_ancestors, embed=True)

    async def services(app: web.Application) -> AsyncIterator[None]:
        async with open_services(config, clock, app[METRICS]) as built:
            app[SERVICES] = built
            await warm_up_renderers(config)
            async with run_background(built, refresh_every):
                yield

    app.cleanup_ctx.append(services)
    add_routes(app)
    return app
