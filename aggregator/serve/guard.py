"""What a slow or idle client may hold: a deadline for headers, an idle limit, a connection cap.

aiohttp (3.10 and later) arms its keep-alive timer when a connection opens, so
a client that never finishes a request is closed after `keepalive_timeout`, as
an idle kept-alive one is. What it lacks, `GuardedRunner` adds:

- `max_connections`: at this many open connections in the process, a new one
  takes the place of the oldest that has not sent a whole request yet; when
  every one has, the new one gets `503` and is closed at once. The cap is kept
  under the process's file limit (`limits_for`).
- `header_timeout`: a new connection's first request must have sent all its
  headers within this many seconds. Until they are in, the connection meets a
  `_HeaderGate` (a buffer), not aiohttp's handler, and one timer keeps every
  gate's deadline.

Header size is bounded too (`max_headers`, `max_field_size`), so a connection
that does trickle cannot make aiohttp buffer megabytes. tests/serve/test_guard.py
checks each limit over real sockets.

The gate is kept because it was measured to matter: without it, 400 clients
trickling headers each held aiohttp's handler (about 33 objects the garbage
collector tracks, against the gate's 13), and in the soak the loop's iterations
over 20 ms holding a full collection went from 1 to 11 (docs/benchmarks.md).

Private names of aiohttp used, and why: `AppRunner._make_server` (the one
place a runner chooses its server; every runner overrides it) and the server's
`_kwargs` (the handler arguments aiohttp gathered from the app and the runner,
which the guarded server is given unchanged). The rest is public:
`Server.__call__`/`connection_made`/`connection_lost`/`request_factory`,
`RequestHandler.force_close`, and asyncio's protocol methods for the hand-over.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from aggregator.config import Config, ServerConfig
from aggregator.ilos.client import UPSTREAM_CONNECTIONS
from aggregator.web.kept import Handler

log = logging.getLogger(__name__)
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
MAX_HEADERS = 64  # SharePoint and browsers send a dozen or two
MAX_FIELD_SIZE = 8190  # aiohttp's default: a long URL still fits
# Header bytes a connection's gate holds before aiohttp's parser takes over (and applies
# its limits): browsers and SharePoint send 1-3 KB, and 400 gates then hold at most 6 MB.
GATE_BYTES = 16 * 1024
CLOSE_BATCH = 64  # overdue gates closed in one turn of the loop


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


class _HeaderGate(asyncio.Protocol):
    """What a new connection talks to until its first request's headers are in.

    It holds a buffer, and the server's one timer keeps every gate's deadline
    (`_GuardedServer._close_overdue`). Once the headers have ended (or
    `GATE_BYTES` have come, for aiohttp's own limits to judge), it hands the
    connection and what came to aiohttp's request handler.
    """

    __slots__ = ("_buffer", "_server", "_transport", "deadline")

    def __init__(self, server: _GuardedServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._server.make_room():
            # Over the cap: say so and go, without a handler or a buffer.
            transport.write(BUSY)
            transport.close()
            return
        self._transport = transport
        self._server.admit(self)

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self not in self._server.gates:
            return  # being closed: what it still sends is dropped
        scanned = max(0, len(self._buffer) - 3)  # an end of headers may straddle two reads
        self._buffer += data
        ended = self._buffer.find(b"\r\n\r\n", scanned) >= 0 or self._buffer.find(b"\n\n", scanned) >= 0
        if ended or len(self._buffer) > GATE_BYTES:
            self._hand_over(self._transport, ended)

    def eof_received(self) -> bool:
        return False  # a request never finished: close

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server.gates.pop(self, None)
        _untie(self._transport)
        self._transport = None

    def close(self) -> None:
        """Headers too slow, or making room for a newcomer."""
        self._server.gates.pop(self, None)
        if self._transport is not None:
            self._transport.close()

    def _hand_over(self, transport: asyncio.Transport, ended: bool) -> None:
        self._server.gates.pop(self, None)
        self._transport = None
        data, self._buffer = bytes(self._buffer), bytearray()
        handler = self._server.handler_for(self.deadline, ended)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)


class _GuardedServer(Server):
    """aiohttp's Server, whose new connections meet a `_HeaderGate` first and keep to `limits`."""

    def __init__(self, handler: Any, *, limits: Limits, request_factory: Any, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._heard_from, **kwargs)
        self.limits = limits
        self._request_for = request_factory
        # Connections at their gate, oldest first, and so by deadline: one timer for
        # them all, not one each (a timer is three objects for the collector to walk).
        self.gates: dict[_HeaderGate, None] = {}
        self._gate_timer: asyncio.Handle | None = None
        self._handled: dict[RequestHandler, asyncio.Transport] = {}
        # Handlers given headers that had not ended at the gate (over GATE_BYTES): the gate's
        # deadline still holds for them, each on its own timer (rare: a browser sends 1-3 KB).
        self._unfinished: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._next_deadline: float | None = None

    def __call__(self) -> _HeaderGate:  # type: ignore[override]  # the factory asyncio calls per connection
        return _HeaderGate(self)

    def handler_for(self, deadline: float, ended: bool) -> RequestHandler:
        """aiohttp's handler for a connection leaving its gate; `ended`: its headers are all in."""
        self._next_deadline = None if ended else deadline
        return super().__call__()

    def _heard_from(self, message: Any, payload: Any, protocol: RequestHandler, *args: Any) -> Any:
        """A request's headers are in: its connection has been heard from."""
        if self._unfinished:  # rare: nearly every connection's headers end at the gate
            timer = self._unfinished.pop(protocol, None)
            if timer is not None:
                timer.cancel()
        return self._request_for(message, payload, protocol, *args)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._handled[handler] = transport
        if self._next_deadline is not None:
            loop = asyncio.get_running_loop()
            self._unfinished[handler] = loop.call_at(self._next_deadline, self._cut, handler)
            self._next_deadline = None

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        timer = self._unfinished.pop(handler, None)
        if timer is not None:
            timer.cancel()
        _untie(self._handled.pop(handler, None))

    def _cut(self, handler: RequestHandler) -> None:
        """Close a handled connection now: it stops counting at once (its socket closes on the next turn)."""
        timer = self._unfinished.pop(handler, None)
        if timer is not None:
            timer.cancel()
        transport = self._handled.pop(handler, None)
        handler.force_close()
        _untie(transport)  # closed: its reader is gone, and connection_lost no longer finds it here

    def admit(self, gate: _HeaderGate) -> None:
        loop = asyncio.get_running_loop()
        gate.deadline = loop.time() + self.limits.header_timeout
        self.gates[gate] = None
        if self._gate_timer is None:
            self._gate_timer = loop.call_at(gate.deadline, self._close_overdue)

    def _close_overdue(self) -> None:
        """Close the gates whose headers are overdue, a batch a turn; wake again at the next deadline.

        Clients that connected together fall due together: 400 closed in one turn, their
        connections' ends handled in the next, held the loop for tens of milliseconds.
        """
        self._gate_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for _ in range(CLOSE_BATCH):
            if not self.gates:
                return
            oldest = next(iter(self.gates))
            if oldest.deadline > now:
                self._gate_timer = loop.call_at(oldest.deadline, self._close_overdue)
                return
            oldest.close()
        if self.gates:
            self._gate_timer = loop.call_soon(self._close_overdue)

    @property
    def open_connections(self) -> int:
        return len(self.gates) + len(self._handled)

    def transports(self) -> list[asyncio.Transport]:
        """Every open connection's transport, at the gate or handled."""
        at_gate = [g._transport for g in self.gates if g._transport is not None]
        return at_gate + list(self._handled.values())

    def make_room(self) -> bool:
        """Whether a new connection may stay: under the cap, or a silent one was closed for it.

        An idle or trickling connection holds a slot without being served, so a
        flood of them would turn every newcomer away until header_timeout. The
        newcomer is let in instead and the flood pays: a client that sends its
        request at once is served long before it is the oldest silent one.
        """
        if self.open_connections < self.limits.max_connections:
            return True
        for gate in self.gates:  # oldest first
            gate.close()
            return True
        for handler in self._unfinished:  # past the gate with headers unfinished
            self._cut(handler)
            return True
        return False

    def pre_shutdown(self) -> None:
        for gate in list(self.gates):
            gate.close()
        if self._gate_timer is not None:
            self._gate_timer.cancel()
            self._gate_timer = None
        super().pre_shutdown()


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections keep to `limits`; other keyword arguments go to AppRunner."""

    def __init__(
        self,
        app: web.Application,
        *,
        limits: Limits,
        front: Callable[[web.Application, Handler], Handler] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.keepalive_timeout)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        super().__init__(app, **kwargs)
        self._limits = limits
        self._front = front

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        handler = plain.request_handler
        if self._front is not None:  # what answers before the app's router, once the app has started
            handler = self._front(self.app, handler)
        # The same server aiohttp built (handler, request factory, handler arguments), guarded.
        return _GuardedServer(
            handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            limits=self._limits,
            **plain._kwargs,
        )
