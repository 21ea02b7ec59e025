"""Running the app in one process until a signal (`serve`, `demo`); N processes are `workers`.

`cli` and `demo` both start the service through `serve_forever`, so the
access log, shutdown and signal handling are the same whichever way it runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from aggregator import PRODUCT, logs
from aggregator.accesslog import AccessLogger, flush
from aggregator.config import Config
from aggregator.guard import GuardedRunner, limits_for
from aggregator.web import create_app

log = logging.getLogger(PRODUCT)


async def serve_forever(config: Config, *, ready: Callable[[], None] | None = None) -> None:
    """Run the service until SIGINT or SIGTERM; `ready` is called once it listens."""
    if config.server.log_format == "json":
        logs.use_json()
    limits = limits_for(config)
    # Our access logger always runs: it counts requests for /metrics, and writes lines if asked to.
    AccessLogger.write_lines = config.server.access_log
    runner = GuardedRunner(
        create_app(config), limits=limits, shutdown_timeout=5.0, access_log_class=AccessLogger
    )
    await runner.setup()
    # The kernel's queue of connections not yet accepted: aiohttp's default of 128 lost
    # connections in a burst of 1,100 (SYN cookies: the client thinks it is connected and the
    # server never hears of it). As deep as the cap, like gunicorn's 2,048; somaxconn bounds it.
    backlog = max(128, limits.max_connections)
    site = web.TCPSite(runner, config.server.host, config.server.port, backlog=backlog)
    await site.start()
    log.info(
        "serving on http://%s:%s (public URL %s), %d organisations",
        config.server.host,
        config.server.port,
        config.server.public_url,
        len(config.orgs),
    )
    if ready is not None:
        ready()
    try:
        await wait_for_signal()
    finally:
        await runner.cleanup()
        flush()


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
