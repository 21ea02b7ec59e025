"""A TCP proxy on loopback that misbehaves on purpose, between the service and what it talks to.

Put it in front of the simulated ilos or of a Redis, and the bytes the service receives come
late (`latency` ± `jitter`, per chunk), slowly (`bandwidth` bytes a second), cut (`reset_after`
bytes, then a TCP reset), stalled after an HTTP answer's headers (`hang_after_headers`), or
with the close held back (`slow_close` seconds). What the service sends passes as it is.
Faults can be changed while it runs (`set`), and apply at once to open connections too, as a
network that turns bad does. Seeded, so the jitter is the same in every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field, replace

CHUNK = 1024  # bytes forwarded at a time when the bandwidth is capped


@dataclass(frozen=True)
class Faults:
    latency: float = 0.0  # seconds added before each chunk towards the service
    jitter: float = 0.0  # ± seconds around the latency, uniform
    bandwidth: float | None = None  # bytes a second towards the service
    reset_after: int | None = None  # bytes towards the service, then a TCP reset
    hang_after_headers: bool = False  # an HTTP answer's headers, then nothing more (held open)
    stall: bool = False  # nothing at all towards the service (held open)
    slow_close: float = 0.0  # seconds between the far end closing and the proxy closing


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> FaultProxy:
        self._rng = random.Random(self.seed)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set(self, **faults: object) -> None:
        """Change the faults (`Faults`' fields), for open connections too."""
        self.faults = replace(self.faults, **faults)  # type: ignore[arg-type]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            target_r, target_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(client_w)
            self._tasks.discard(task)
            return
        up = asyncio.create_task(_pump(client_r, target_w))
        try:
            await self._towards_service(target_r, client_w)
        except (ConnectionError, OSError):
            pass
        finally:
            up.cancel()
            with contextlib.suppress(BaseException):
                await up
            target_w.close()
            client_w.close()
            self._tasks.discard(task)

    async def _towards_service(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        sent = 0
        seen = b""
        while True:
            faults = self.faults  # as they are now
            size = CHUNK if faults.bandwidth else 65_536
            chunk = await source.read(size)
            if not chunk:
                break
            if faults.stall:
                await asyncio.Event().wait()  # held open until the service gives up
            if faults.hang_after_headers:
                seen += chunk
                end = seen.find(b"\r\n\r\n")
                if end >= 0:
                    head = len(chunk) - (len(seen) - (end + 4))
                    sink.write(chunk[:head])
                    await sink.drain()
                    await asyncio.Event().wait()
                continue
            if faults.latency or faults.jitter:
                await asyncio.sleep(
                    max(0.0, faults.latency + self._rng.uniform(-faults.jitter, faults.jitter))
                )
            if faults.reset_after is not None and sent + len(chunk) >= faults.reset_after:
                sink.write(chunk[: max(0, faults.reset_after - sent)])
                await sink.drain()
                _reset(sink)
                return
            sink.write(chunk)
            await sink.drain()
            sent += len(chunk)
            if faults.bandwidth:
                await asyncio.sleep(len(chunk) / faults.bandwidth)
        if self.faults.slow_close:
            await asyncio.sleep(self.faults.slow_close)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await source.read(65_536):
            sink.write(chunk)
            await sink.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
