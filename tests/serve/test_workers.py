"""`serve --workers 2` under gunicorn, over real processes and signals.

A killed worker is replaced, SIGTERM lets requests under way finish and
leaves no process behind (parse workers included), a killed master takes its
workers with it, and one scrape of /metrics counts every worker's searches.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.conftest import config_toml, free_port
from tests.helpers import serve, wait_until_up
from tests.test_cli import alive, descendants

ROOT = Path(__file__).resolve().parents[2]


def start(sim, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = tmp_path / "aggregator.toml"
    path.write_text(config_toml(sim, server={"port": port, "parse_workers": 1}))
    proc = serve(path, "--workers", "2")
    return proc, f"http://127.0.0.1:{port}"


async def workers_of(master: int, count: int = 2, within: float = 30) -> list[int]:
    """The master's worker processes (its direct children), once there are `count` of them."""
    deadline = time.monotonic() + within
    while True:
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        found = [int(p) for p in out]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"workers of {master}: {found}"
        await asyncio.sleep(0.1)


async def all_gone(pids: set[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        await asyncio.sleep(0.1)
    return [p for p in pids if alive(p)]


async def test_a_killed_worker_is_replaced_and_sigterm_drains(sim, tmp_path) -> None:
    proc, base = start(sim, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, base + "/healthz")
            first = await workers_of(proc.pid)
            os.kill(first[0], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while True:  # a replacement within 5 s
                now = await workers_of(proc.pid)
                if first[0] not in now and len(now) == 2:
                    break
                assert time.monotonic() < deadline, "no replacement worker within 5 s"
                await asyncio.sleep(0.1)
            for _ in range(6):
                async with session.get(base + "/search.atom?q=onboarding") as resp:
                    assert resp.status == 200
            # SIGTERM with a request under way: it finishes, then nothing is left.
            for org in sim.orgs:
                org.latency = 1.5
            everyone = descendants(proc.pid) | {proc.pid}
            slow = asyncio.ensure_future(session.get(base + "/search.atom?q=induction"))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            resp = await slow
            assert resp.status == 200 and b"<feed" in await resp.read()
        proc.wait(20)
        assert await all_gone(everyone, 10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"Traceback" not in err
    # The request SIGTERM let finish was its worker's last: its access line was still
    # batched when the worker stopped, and reaches the log all the same.
    assert b'"GET /search.atom?q=induction" 200' in err


async def test_a_killed_master_takes_its_workers_along(sim, tmp_path) -> None:
    proc, base = start(sim, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, base + "/healthz")
            async with session.get(base + "/search.atom?q=onboarding") as resp:
                assert resp.status == 200  # parse workers started
        await workers_of(proc.pid)
        children = descendants(proc.pid)
        assert len(children) >= 4  # two workers and their parse processes
        proc.kill()
        proc.wait(10)
        assert await all_gone(children, 10) == []
    finally:
        proc.stderr.close()


async def test_one_scrape_counts_every_workers_searches(sim, tmp_path) -> None:
    proc, base = start(sim, tmp_path)
    searches = 12
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, base + "/healthz")
            for n in range(searches):
                # A new connection each time, so the kernel spreads them over both workers.
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.get(f"{base}/search.json?q=lecture+{n}") as resp,
                ):
                    assert resp.status == 200
                    await resp.read()
            totals = set()
            for _ in range(4):  # whichever worker answers the scrape
                async with aiohttp.ClientSession() as fresh, fresh.get(base + "/metrics") as resp:
                    text = await resp.text()
                rendered = sum(
                    float(v)
                    for v in re.findall(
                        r'^ilosagg_pages_total\{format="json",source="rendered"\} ([\d.]+)$', text, re.M
                    )
                )
                totals.add(rendered)
            assert totals == {float(searches)}
            assert re.search(
                r'^ilosagg_requests_total\{format="json",route="/search.json",status="200"\} 12.0$',
                text,
                re.M,
            )
            assert re.search(r'^ilosagg_breaker_open\{org="hr"\} 0.0$', text, re.M)
            assert re.search(r'^ilosagg_cache_lookups_total\{layer="answer",result="miss"\} ', text, re.M)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


async def test_sighup_reloads_the_config_without_dropping_requests(sim, tmp_path) -> None:
    proc, base = start(sim, tmp_path)
    path = tmp_path / "aggregator.toml"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_up(session, base + "/healthz")
            async with session.get(base + "/search.atom?q=onboarding") as resp:
                assert resp.status == 200  # open: no [[clients]] yet
            token = "reloaded-client-token-0123456789"
            path.write_text(
                path.read_text().replace("[server]\n", '[server]\nsigning_secret = "s-0123456789abcdef"\n', 1)
                + f'\n[[clients]]\nname = "new"\ntoken = "{token}"\n'
            )
            proc.send_signal(signal.SIGHUP)
            statuses = []
            deadline = time.monotonic() + 20
            while True:  # every request is answered meanwhile; then the new config holds
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.get(base + "/search.atom?q=onboarding") as resp,
                ):
                    statuses.append(resp.status)
                if statuses[-1] == 401:
                    break
                assert time.monotonic() < deadline, statuses
                await asyncio.sleep(0.1)
            assert set(statuses) <= {200, 401}
            async with session.get(f"{base}/search.atom?q=onboarding&key={token}") as resp:
                status = resp.status
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=20)
    assert status == 200, log.decode(errors="replace")[-4000:]  # the service's own account
