"""What a slow or idle client may hold: aiohttp's timers, plus the connection cap it lacks.

aiohttp (3.10 and later) arms its keep-alive timer when a connection opens, so
a client that never finishes a request's headers is closed after
`keepalive_timeout`, like an idle kept-alive one. What it lacks:

- `max_connections`: at this many open connections in the process, a new one
  takes the place of the oldest that has not sent a whole request yet; when
  every one has, the new one gets `503` and is closed at once. The cap is kept
  under the process's file limit (`limits_for`).
- `header_timeout`, where shorter than `keepalive_timeout`: a new connection's
  first request must have sent all its headers within it. The connections not
  yet heard from are kept in the order they opened, which is the order of
  their deadlines, so one timer serves them all.

Header size is bounded too (`max_headers`, `max_field_size`), so a connection
that does trickle cannot make aiohttp buffer megabytes. tests/serve/test_guard.py
checks each limit over real sockets.

Private names of aiohttp used, and why: `AppRunner._make_server` (the one
place a runner chooses its server; every runner overrides it) and the server's
`_kwargs` (the handler arguments aiohttp gathered from the app and the runner,
which the capped server must be given unchanged). The rest is public:
`Server.connection_made`/`connection_lost`/`request_factory` and
`RequestHandler.force_close`.
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

from aggregator.config import Config, ServerConfig
from aggregator.ilos.client import UPSTREAM_CONNECTIONS

log = logging.getLogger(__name__)
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
MAX_HEADERS = 64  # SharePoint and browsers send a dozen or two
MAX_FIELD_SIZE = 8190  # aiohttp's default: a long URL still fits
CLOSE_BATCH = 64  # overdue connections closed in one turn of the loop


_SERVER = ServerConfig()  # the defaults, written once in config
REDIS_CLIENTS = 3  # store.cache, store.held and store.limiter each open a pool of redis_pool_size


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = _SERVER.header_timeout
    keepalive_timeout: float = _SERVER.keepalive_timeout
    max_connections: int = _SERVER.max_connections


def limits_for(config: Config) -> Limits:
    """The server's limits, with the connection cap kept under the process's file limit."""
    limits = Limits(
        config.server.header_timeout, config.server.keepalive_timeout, config.server.max_connections
    )
    # Besides clients' connections the process holds ilos connections, Redis pools (the
    # cache's, the budget's windows' and the caller limits'), parse workers' pipes and its logs.
    reserved = UPSTREAM_CONNECTIONS + REDIS_CLIENTS * config.cache.redis_pool_size + 64
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


class CappedServer(Server):
    """aiohttp's Server, keeping to `limits`: a cap on connections, and a deadline for first requests."""

    def __init__(self, handler: Any, *, limits: Limits, request_factory: Any, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._heard_from, **kwargs)
        self.limits = limits
        self._request_for = request_factory
        self._open: dict[RequestHandler, asyncio.Transport] = {}
        # Connections whose first request has not come, oldest first, and so by deadline.
        self._silent: dict[RequestHandler, float] = {}
        self._timer: asyncio.Handle | None = None
        self._deadlines = limits.header_timeout < limits.keepalive_timeout  # else aiohttp's timer cuts first

    def _heard_from(self, message: Any, payload: Any, protocol: RequestHandler, *args: Any) -> Any:
        """A request's headers are in: its connection is no longer silent."""
        self._silent.pop(protocol, None)
        return self._request_for(message, payload, protocol, *args)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if not self._make_room():
            # Over the cap: say so and go. aiohttp's handler then sees the connection lost.
            transport.write(BUSY)
            transport.close()
            return
        self._open[handler] = transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.header_timeout
        self._silent[handler] = deadline
        if self._deadlines and self._timer is None:
            self._timer = loop.call_at(deadline, self._close_overdue)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._silent.pop(handler, None)
        _untie(self._open.pop(handler, None))

    def _make_room(self) -> bool:
        """Whether a new connection may stay: under the cap, or a silent one was closed for it.

        An idle or trickling connection holds a slot without being served, so a
        flood of them would turn every newcomer away until the deadline. The
        newcomer is let in instead and the flood pays: a client that sends its
        request at once is served long before it is the oldest silent one.
        """
        if len(self._open) < self.limits.max_connections:
            return True
        for oldest in self._silent:
            self._drop(oldest)
            return True
        return False

    def _drop(self, handler: RequestHandler) -> None:
        """Close a connection now; it stops counting at once (its socket closes on the next turn)."""
        self._silent.pop(handler, None)
        transport = self._open.pop(handler, None)
        handler.force_close()
        _untie(transport)  # closed: its reader is gone, and connection_lost no longer finds it here

    def _close_overdue(self) -> None:
        """Close the silent connections whose deadline has passed, a batch a turn; wake again at the next.

        Clients that connected together fall due together: 400 closed in one turn, their
        connections' ends handled in the next, held the loop for tens of milliseconds.
        """
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for _ in range(CLOSE_BATCH):
            if not self._silent:
                return
            oldest, deadline = next(iter(self._silent.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._close_overdue)
                return
            self._drop(oldest)
        if self._silent:
            self._timer = loop.call_soon(self._close_overdue)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def transports(self) -> list[asyncio.Transport]:
        """Every open connection's transport."""
        return list(self._open.values())

    def pre_shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().pre_shutdown()


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
        # The same server aiohttp built (handler, request factory, handler arguments), capped.
        return CappedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            limits=self._limits,
            **plain._kwargs,
        )
