"""ilos's upload webhook (web.webhook, ilos.webhook) against hostile or careless holders of its secret."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import config_toml, free_port
from tests.freshness.test_subscriptions import SECRET
from tests.helpers import serve, wait_until_up


async def test_a_hook_client_that_hangs_up_mid_body_costs_one_short_line(sim, tmp_path) -> None:
    """After `Expect: 100-continue` and part of a body the client closes: before, an ERROR with a
    traceback and a 500 access line; now one access line, a 400, and nothing else."""
    port = free_port()
    path = tmp_path / "aggregator.toml"
    text = config_toml(sim, server={"port": port})
    path.write_text(text.replace('id = "engineering"', f'id = "engineering"\nwebhook_secret = "{SECRET}"'))
    proc = serve(path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, f"http://127.0.0.1:{port}/healthz")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"POST /hooks/ilos/engineering/{SECRET} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 200\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 100")
        writer.write(b'{"randtag": "NeWvId0')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.5)  # the server notices, and writes its access line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    log = err.decode()
    assert "Traceback" not in log and " ERROR " not in log, log
    [line] = [line for line in log.splitlines() if "POST /hooks/" in line]
    assert '"POST /hooks/ilos/engineering/REDACTED" 400' in line
