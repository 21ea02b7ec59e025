"""What a slow or idle client may hold: a deadline for headers, an idle limit, a connection cap.

aiohttp parses requests but has no deadline for a request's headers and no
cap on open connections, so a client that trickles header bytes, or opens a
thousand idle connections, holds memory and file descriptors for as long as
it likes. `GuardedRunner` is an `AppRunner` whose connections are watched:

- `header_timeout`: a new connection's first request must have sent all its
  headers within this many seconds, or the connection is closed. (aiohttp's
  own keep-alive timer bounds the wait for each later request's headers.)
- `keepalive_timeout`: an idle kept-alive connection is closed after this.
- `max_connections`: at this many open connections in the process, a new one
  takes the place of the oldest that has not sent a whole request yet; when
  every one has, the new one gets `503` and is closed at once. The cap is kept
  under the process's file limit (`limits_for`).

Header size is bounded too (`max_headers`, `max_field_size`), so a connection
that does trickle cannot make aiohttp buffer megabytes. It relies on aiohttp's
RequestHandler and Server (pinned in pyproject); tests/test_guard.py checks
each limit over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from aggregator.config import Config
from aggregator.upstream import UPSTREAM_CONNECTIONS

log = logging.getLogger(__name__)
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
MAX_HEADERS = 64  # SharePoint and browsers send a dozen or two
MAX_FIELD_SIZE = 8190  # aiohttp's default: a long URL still fits


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000


def limits_for(config: Config) -> Limits:
    """The server's limits, with the connection cap kept under the process's file limit."""
    limits = Limits(
        config.server.header_timeout, config.server.keepalive_timeout, config.server.max_connections
    )
    # Besides clients' connections the process holds ilos connections, Redis pools (the
    # cache's and the limiter's), parse workers' pipes and its logs.
    reserved = UPSTREAM_CONNECTIONS + 2 * config.cache.redis_pool_size + 64
    return fit_to_file_limit(limits, reserved)


def fit_to_file_limit(limits: Limits, reserved: int) -> Limits:
    """Past the file limit, accept() fails (EMFILE) before the cap is reached: asyncio then
    stops accepting for a second and logs a traceback per attempt, and ilos or Redis
    connections fail too. So the soft limit is raised towards the hard one as far as the
    cap needs, and where even that is too low the cap comes down, with a warning.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return limits
    needed = limits.max_connections + reserved
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < needed:
        wanted = needed if hard == unlimited else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass
    if soft == unlimited or soft >= needed:
        return limits
    cap = max(16, soft - reserved)
    log.warning(
        "server.max_connections = %d does not fit the file limit (%d descriptors, %d kept for ilos, "
        "Redis and the rest): at most %d connections are accepted; raise the limit (systemd "
        "LimitNOFILE, ulimit -n) to allow more",
        limits.max_connections,
        soft,
        reserved,
        cap,
    )
    return replace(limits, max_connections=cap)


def _untie(transport: asyncio.BaseTransport | None) -> None:
    """Let a closed connection's transport be freed at once, not by a full garbage collection.

    On Python 3.11 asyncio's socket transport keeps a bound method of itself
    (`_read_ready_cb`), a reference cycle, so every closed connection lingered
    until a full collection, which then had hundreds to free: slow-header
    clients cut off every few seconds made those collections hold the loop
    10-25 ms. Python 3.12 drops the method on close (CPython gh-100348); this
    does the same once the connection is gone, and nothing on 3.12 and later.
    """
    if sys.version_info < (3, 12) and transport is not None and hasattr(transport, "_read_ready_cb"):
        transport._read_ready_cb = None


class _GuardedHandler(RequestHandler):
    __slots__ = ("_header_timeout", "_header_timer", "_own_transport", "_refused")

    def __init__(self, manager: Server, *, header_timeout: float, refuse: bool, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._own_transport: asyncio.BaseTransport | None = None  # aiohttp forgets it before connection_lost
        self._refused = refuse
        self._header_timeout = header_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._own_transport = transport
        if self._refused:
            # Over the cap: say so and go, without a request handler or a parser's buffers.
            assert isinstance(transport, asyncio.Transport)
            transport.write(BUSY)
            transport.close()
            self._manager = None  # connection_lost then has nothing to undo
            return
        super().connection_made(transport)
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self._request_count:
            self._header_timer.cancel()  # the first request's headers are in
            self._header_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)
        _untie(self._own_transport)
        self._own_transport = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._request_count:
            self.force_close()


class _GuardedServer(Server):
    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits

    def __call__(self) -> RequestHandler:
        full = len(self.connections) >= self._limits.max_connections
        return _GuardedHandler(
            self,
            loop=self._loop,
            header_timeout=self._limits.header_timeout,
            refuse=full and not self._evict_one_silent(),
            **self._kwargs,
        )

    def _evict_one_silent(self) -> bool:
        """At the cap, close the oldest connection that has not yet sent a whole request.

        An idle or trickling connection holds a slot without being served, so a
        flood of them would turn every newcomer away until header_timeout. The
        newcomer is let in instead and the flood pays: a client that sends its
        request at once is served long before it is the oldest silent one.
        """
        for handler in self.connections:  # oldest first
            if not handler._request_count and not handler._force_close:
                handler.force_close()
                return True
        return False


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections keep to `limits`; other keyword arguments go to AppRunner."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", limits.keepalive_timeout)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        # The same server aiohttp built (handler, request factory, handler arguments), guarded.
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            limits=self._limits,
            **plain._kwargs,
        )
