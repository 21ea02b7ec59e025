"""Idle connections against the systemd unit's file limit (issue 9's second probe).

    python -m bench.idle [--idle 1100] [--nofile 1024]

The service runs under `ulimit -n` (the systemd default of 1,024 descriptors)
with its default `server.max_connections` (1,000). `--idle` connections are
opened and left silent; meanwhile a well-behaved prober asks `/healthz` every
second for 20 s. Reports how many probes were answered, how many idle
connections the service turned away (503) or closed, and how many bytes the
service logged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.processes import ROOT, free_port, start_simulator, stop, wait_for

LIMITED = ["bash", "-c", 'ulimit -n "$0" && exec "$@"']  # then the limit and the command


async def idle_connection(port: int, outcomes: dict[str, int]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        outcomes["refused at connect"] += 1
        return
    try:
        first = await asyncio.wait_for(reader.read(64), timeout=25)
        if first.startswith(b"HTTP/1.1 503"):
            outcomes["turned away with 503"] += 1
        elif first:
            outcomes["answered"] += 1
        else:
            outcomes["closed by the service"] += 1
    except TimeoutError:
        outcomes["still open after 25 s"] += 1
    except OSError:
        outcomes["reset"] += 1
    finally:
        writer.close()


async def probe(base: str, seconds: float) -> tuple[int, int, float]:
    """(answered, asked, slowest answer in s)."""
    answered = asked = 0
    slowest = 0.0
    timeout = aiohttp.ClientTimeout(total=5)
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        asked += 1
        started = time.perf_counter()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{base}/healthz") as r:
                answered += r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            pass
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(1)
    return answered, asked, slowest


async def run(port: int, base: str, idle: int) -> tuple[dict[str, int], tuple[int, int, float]]:
    outcomes = dict.fromkeys(
        (
            "turned away with 503",
            "closed by the service",
            "still open after 25 s",
            "answered",
            "refused at connect",
            "reset",
        ),
        0,
    )
    tasks = [asyncio.create_task(idle_connection(port, outcomes)) for _ in range(idle)]
    await asyncio.sleep(1)
    probes = await probe(base, 20)
    await asyncio.gather(*tasks)
    return outcomes, probes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024)
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(1, 10, 0.05, 0.02)
    port = free_port()
    config = Path(tempfile.mkstemp(suffix=".toml")[1])
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[upstream]\nbase_url = "{sim_url}"\n'
        f'[[orgs]]\nid = "org0"\nname = "Org 0"\napi_key = "{keys[0]}"\n'
    )
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    with log.open("wb") as out:
        service = subprocess.Popen(
            [
                *LIMITED,
                str(args.nofile),
                sys.executable,
                "-m",
                "aggregator",
                "serve",
                "--config",
                str(config),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=out,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(base + "/healthz")
            logged_before = log.stat().st_size
            outcomes, (answered, asked, slowest) = asyncio.run(run(port, base, args.idle))
        finally:
            stop(service, sim)
    print(f"{args.idle} idle connections, ulimit -n {args.nofile}, default max_connections (1,000)")
    for name, count in outcomes.items():
        if count:
            print(f"  {name}: {count}")
    print(f"prober: {answered} of {asked} /healthz answered, slowest {slowest * 1000:.0f} ms")
    print(f"service log during the run: {log.stat().st_size - logged_before} bytes")
    print(log.read_text(errors="replace")[-600:])


if __name__ == "__main__":
    main()
