"""Slow and idle clients cannot hold the service: header deadline, idle limit, connection cap.

The guarded runner serves a small app on a real loopback socket; the limits
are set to fractions of a second so that a test waits for the server to close
a connection (polling the socket), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
import weakref

import pytest
from aiohttp import web

from aggregator.serve.guard import GuardedRunner, Limits, fit_to_file_limit
from tests.conftest import free_port


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def serve(limits: Limits) -> tuple[GuardedRunner, int]:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = GuardedRunner(app, limits=limits, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sent until it closed the connection (fails if it never does)."""
    return await asyncio.wait_for(reader.read(), within)


@pytest.mark.parametrize("line", [100, 4000])  # held at the gate; past it to aiohttp, unfinished
async def test_headers_that_trickle_are_cut_off(line: int) -> None:
    runner, port = await serve(Limits(header_timeout=0.3, keepalive_timeout=30, max_connections=10))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for _ in range(100):  # one header line at a time, never the blank line that ends them
            try:
                writer.write(b"X-Slow: " + b"a" * line + b"\r\n")
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.02)
            if reader.at_eof():
                break
        assert await closed_by_server(reader) == b""
        assert time.monotonic() - started < 5  # the header deadline, not the 30 s keep-alive
        writer.close()
    finally:
        await runner.cleanup()


async def test_many_connections_overdue_together_are_all_cut_off() -> None:
    """Clients that connected together fall due together; they are cut off a batch per turn, all of them."""
    runner, port = await serve(Limits(header_timeout=0.3, keepalive_timeout=30, max_connections=500))
    try:
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(150)]
        for _, writer in opened:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        sent = await asyncio.gather(*(closed_by_server(reader) for reader, _ in opened))
        assert sent == [b""] * 150
        for _, writer in opened:
            writer.close()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "chunks",
    [
        [b"GET / HTTP/1.1\r\nHost: x\r\n\r", b"\n"],  # the end of the headers split over two reads
        [b"GET / HTTP/1.1\r\nHost: x\r\n"]
        + [b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(30)]
        + [b"\r\n"],
    ],
    ids=["split", "30-kb-of-headers"],
)
async def test_a_request_however_its_headers_arrive_is_answered(chunks: list[bytes]) -> None:
    runner, port = await serve(Limits(header_timeout=5, keepalive_timeout=30, max_connections=10))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        head = await asyncio.wait_for(reader.readuntil(b"hello"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await runner.cleanup()


async def test_a_prompt_request_is_answered_and_idle_connections_close() -> None:
    runner, port = await serve(Limits(header_timeout=0.3, keepalive_timeout=0.5, max_connections=10))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"hello")
        assert head.startswith(b"HTTP/1.1 200")
        # Kept alive after the answer, then closed once idle for keepalive_timeout.
        assert await closed_by_server(reader) == b""
        writer.close()
    finally:
        await runner.cleanup()


async def wait_for_connections(runner, count: int) -> None:
    for _ in range(100):
        if runner.server.open_connections == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server holds {runner.server.open_connections} connections, not {count}")


async def test_at_the_cap_served_connections_keep_their_place_and_a_newcomer_gets_503() -> None:
    runner, port = await serve(Limits(header_timeout=30, keepalive_timeout=30, max_connections=3))
    held = []
    try:
        for _ in range(3):  # kept-alive connections that have been served
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await r.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
            held.append((r, w))
        await wait_for_connections(runner, 3)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
        writer.close()
        # The held connections still work.
        r, w = held[0]
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await r.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
    finally:
        for _, w in held:
            w.close()
        await runner.cleanup()


async def test_at_the_cap_a_newcomer_takes_the_place_of_the_oldest_silent_connection() -> None:
    """A flood of idle connections cannot lock out a client that asks at once."""
    runner, port = await serve(Limits(header_timeout=30, keepalive_timeout=30, max_connections=3))
    silent = []
    try:
        for _ in range(3):
            silent.append(await asyncio.open_connection("127.0.0.1", port))
            await wait_for_connections(runner, len(silent))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200")
        writer.close()
        assert await closed_by_server(silent[0][0]) == b""  # the oldest silent one made room
    finally:
        for _, w in silent:
            w.close()
        await runner.cleanup()


def test_the_cap_fits_under_the_file_limit() -> None:
    """Past the file limit accept() fails before the cap: the soft limit is raised, or the cap lowered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
        assert fit_to_file_limit(Limits(max_connections=1000), reserved=700).max_connections == 1000
        if hard != resource.RLIM_INFINITY:
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(1700, hard)
            too_many = Limits(max_connections=hard)
            assert fit_to_file_limit(too_many, reserved=700).max_connections == max(16, hard - 700)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_oversized_headers_are_refused_not_buffered() -> None:
    runner, port = await serve(Limits(header_timeout=30, keepalive_timeout=30, max_connections=10))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(200))  # more than MAX_HEADERS
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = await asyncio.wait_for(reader.read(64), 5)
        assert answer.startswith(b"HTTP/1.") and b" 4" in answer[:13]  # a 4xx at once
        writer.close()
    finally:
        await runner.cleanup()


async def test_closed_connections_are_freed_at_once_not_left_to_the_cycle_collector() -> None:
    """Hundreds of slow clients cut off every few seconds must not pile up for a full collection.

    On Python 3.11 each closed socket transport was a reference cycle, freed only
    by a full garbage collection, which then held the loop 10-25 ms in the soak.
    """
    runner, port = await serve(Limits(header_timeout=0.3, keepalive_timeout=30, max_connections=50))
    gc.collect()
    gc.disable()  # only reference counting may free them
    try:
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        await wait_for_connections(runner, 20)
        transports = [weakref.ref(t) for t in runner.server.transports()]
        for n, (reader, writer) in enumerate(clients):
            if n % 2:  # half answered and then closed by the client
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await reader.readuntil(b"hello")
                writer.close()
            else:  # half cut off by the header deadline
                writer.write(b"GET / HTTP/1.1\r\n")
        for reader, writer in clients[::2]:
            assert await closed_by_server(reader) == b""
            writer.close()
        await wait_for_connections(runner, 0)
        await asyncio.sleep(0)  # the transports' last callbacks
        assert [t for t in transports if t() is not None] == []
    finally:
        gc.enable()
        await runner.cleanup()
