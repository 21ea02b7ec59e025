"""Running the app: one process until a signal, or N processes sharing one port.

`cli` and `demo` both start the service through `serve_forever`, so the
access log, shutdown and signal handling are the same whichever way it runs.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from types import FrameType

from aiohttp import web

from aggregator import PRODUCT, logs
from aggregator.accesslog import AccessLogger, flush
from aggregator.config import Config
from aggregator.guard import GuardedRunner, Limits
from aggregator.web import create_app

log = logging.getLogger(PRODUCT)


async def serve_forever(
    config: Config, *, reuse_port: bool = False, ready: Callable[[], None] | None = None
) -> None:
    """Run the service until SIGINT or SIGTERM; `ready` is called once it listens."""
    if config.server.log_format == "json":
        logs.use_json()
    limits = Limits(
        config.server.header_timeout, config.server.keepalive_timeout, config.server.max_connections
    )
    if config.server.access_log:
        runner = GuardedRunner(
            create_app(config), limits=limits, shutdown_timeout=5.0, access_log_class=AccessLogger
        )
    else:
        runner = GuardedRunner(create_app(config), limits=limits, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port or None)
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


def _worker(config: Config) -> None:
    logs.configure(fmt=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s")
    asyncio.run(serve_forever(config, reuse_port=True))


def run_workers(config: Config, workers: int) -> int:
    """N processes on one port (SO_REUSEPORT); the kernel spreads connections between them."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker, args=(config,), name=f"worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.join()
    return 0 if all(p.exitcode in (0, -signal.SIGTERM) for p in procs) else 1
