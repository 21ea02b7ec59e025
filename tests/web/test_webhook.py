"""ilos's upload webhook (web.webhook, ilos.webhook) against hostile or careless holders of its secret."""

from __future__ import annotations

import asyncio

import aiohttp

from aggregator.demo.simulator import search_catalog
from aggregator.web.state import SERVICES
from tests.conftest import config_toml, free_port
from tests.freshness.test_subscriptions import SECRET, new_video, start, subscribe, with_webhook
from tests.helpers import NS, atom, serve, server_timing, wait_until_up

HOOK = f"/hooks/ilos/engineering/{SECRET}"


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


async def test_a_replayed_hook_changes_nothing(aiohttp_client, sim, clock, redis_clean) -> None:
    """The same hook posted 6 times caused 5 more upstream searches; a randtag handled within
    search_ttl is now accepted and ignored."""
    app, client = await start(aiohttp_client, with_webhook(sim, redis_clean), clock)
    await subscribe(client, "/search.atom?q=statics&org=engineering")
    await app[SERVICES].refresher.run_once()
    video = new_video("NeWvId000003", "Statics lecture 11: frames")
    hook = str(client.make_url(HOOK))
    searches_before = len(sim.calls("engineering", "search"))
    for _ in range(6):
        assert await sim.upload("engineering", video, hook) == 202
        clock.advance(1)
        await app[SERVICES].refresher.run_once()
    assert len(sim.calls("engineering", "search")) == searches_before + 1
    assert [c.arg for c in sim.calls("engineering", "metadata")].count("NeWvId000003") == 1


async def test_a_flood_of_hooks_neither_queues_without_bound_nor_delays_users_durations(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    """400 hooks with distinct randtags in a second were all accepted and queued 385 lookups,
    and a user's search then said "pending 3" for 45 s and more. Now a hook's lookup is made only
    within the refresh share and never queued; users' lookups keep their budget."""
    _, client = await start(
        aiohttp_client, with_webhook(sim, redis_clean, upstream={"duration_wait": 5.0}), clock
    )
    posted = await asyncio.gather(*(client.post(HOOK, json={"randtag": f"FlOoD{n:07d}"}) for n in range(400)))
    assert {r.status for r in posted} == {202}
    hook_lookups = len(sim.calls("engineering", "metadata"))
    assert hook_lookups <= 18  # refresh_share (0.3) of 60 a window
    ready = await (await client.get("/readyz")).json()
    assert ready["orgs"]["engineering"]["deferred_durations"] == 0
    resp = await client.get("/search.atom", params={"q": "onboarding", "org": "engineering"})
    assert server_timing(resp)["durations"] == "complete"


async def test_a_hook_of_one_org_cannot_erase_another_orgs_durations(
    aiohttp_client, sim, clock, redis_clean
) -> None:
    """A hook on engineering naming a medicine video is looked up with engineering's key; ilos
    answers an error, which used to be cached for the randtag itself, so medicine's next answer
    lost that duration for ten minutes."""
    medicine = sim.org("medicine")
    medicine.duration_child = None  # its durations come from lookups with its own key
    _, client = await start(
        aiohttp_client, with_webhook(sim, redis_clean, upstream={"duration_wait": 5.0}), clock
    )
    video = search_catalog(medicine.videos, "onboarding")[0]
    assert (await client.post(HOOK, json={"randtag": video.randtag})).status == 202
    for _ in range(100):  # the hook's lookup runs behind its answer
        if sim.calls("engineering", "metadata"):
            break
        await asyncio.sleep(0.02)
    assert [c.arg for c in sim.calls("engineering", "metadata")] == [video.randtag]  # asked, refused
    await asyncio.sleep(0.05)  # and its failure is written
    url = "/search.atom?q=onboarding&org=medicine"
    for _ in range(2):  # medicine's first answer, and the one fetched again past search_ttl
        doc = atom(await (await client.get(url)).read())
        entry = next(
            e for e in doc.findall("a:entry", NS) if video.randtag in e.findtext("a:id", namespaces=NS)
        )
        assert entry.find("media:content", NS).get("duration") == str(video.duration_ms // 1000)
        clock.advance(301)
