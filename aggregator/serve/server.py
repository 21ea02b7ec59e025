"""Running the app in one process until a signal (`serve`, `demo`); N processes are `workers`.

`cli` and `demo` both start the service through `serve_forever`, so the
access log, shutdown and signal handling are the same whichever way it runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from aggregator import PRODUCT
from aggregator.config import Config
from aggregator.serve import logs
from aggregator.serve.guard import GuardedRunner, Limits, limits_for
from aggregator.web.accesslog import AccessLogger, flush
from aggregator.web.app import create_app
from aggregator.web.kept import kept_first

log = logging.getLogger(PRODUCT)
ACCEPT_BATCH = 64  # connections accepted in one turn of the loop


async def serve_forever(config: Config, *, ready: Callable[[], None] | None = None) -> None:
    """Run the service until SIGINT or SIGTERM; `ready` is called once it listens."""
    if config.server.log_format == "json":
        logs.use_json()
    limits = limits_for(config)
    # Our access logger always runs: it counts requests for /metrics, and writes lines if asked to.
    AccessLogger.write_lines = config.server.access_log
    runner = GuardedRunner(
        create_app(config),
        limits=limits,
        front=kept_first,
        shutdown_timeout=5.0,
        access_log_class=AccessLogger,
    )
    await runner.setup()
    try:
        await _listen(runner, config, limits)
        log.info(
            "serving on http://%s:%s (public URL %s), %d organisations",
            config.server.host,
            config.server.port,
            config.server.public_url,
            len(config.orgs),
        )
        if ready is not None:
            ready()
        await wait_for_signal()
    finally:
        await runner.cleanup()
        flush()


class CannotListen(Exception):
    """The address cannot be listened on (in use, not this host's, not allowed): said in one line."""


async def _listen(runner: web.AppRunner, config: Config, limits: Limits) -> None:
    host, port = config.server.host, config.server.port
    try:
        sockets = bound_sockets(host, port)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # The kernel's queue of connections not yet accepted: aiohttp's default of 128 lost
    # connections in a burst of 1,100 (SYN cookies: the client thinks it is connected and the
    # server never hears of it). As deep as the cap, like gunicorn's 2,048; somaxconn bounds it.
    backlog = max(128, limits.max_connections)
    for sock in sockets:
        # asyncio accepts as many connections in one turn of the loop as the backlog it is
        # given: 400 slow clients reconnecting at once held the loop ~50 ms in one accept.
        # It is given a batch; the socket's own queue is then deepened (listen again).
        await web.SockSite(runner, sock, backlog=ACCEPT_BATCH).start()
        sock.listen(backlog)


def bound_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, non-blocking sockets for every address `host` names, as asyncio's `create_server`
    would make them (address reuse; IPv6 sockets take IPv6 only). aiohttp makes them listen."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
