"""A burst of distinct cold searches against ilos's per-key budget, over two processes.

    python -m bench.burst [--queries 24] [--orgs 5]

Two `serve` processes share one Redis; five orgs whose simulated upstream
allows 60 requests per rolling minute per key (429 with Retry-After past it),
40 videos each with no duration in the feed (every duration costs a
metadata request). 24 distinct searches (count=50) go out at once, half to
each process. Reports the 429s the upstream had to send, answers missing an
org, the share of entries that had their duration in the first answer, and
how long until every duration was known (the budget's window is a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request

import aiohttp

from bench.processes import free_port, start_redis, start_service, start_simulator, stop


def server_timing(header: str) -> dict[str, str]:
    out = {}
    for metric in header.split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        out[name] = next(p for p in params if p.startswith("desc=")).split("=", 1)[1].strip('"')
    return out


async def burst(bases: list[str], queries: list[str]) -> tuple[list[dict[str, str]], int, int, float]:
    async with aiohttp.ClientSession() as session:

        async def one(i: int, q: str) -> tuple[dict[str, str], int, int]:
            async with session.get(f"{bases[i % 2]}/search.atom", params={"q": q, "count": "50"}) as resp:
                body = await resp.read()
                return (
                    server_timing(resp.headers["Server-Timing"]),
                    body.count(b"<entry>"),
                    body.count(b'duration="'),
                )

        started = time.monotonic()
        first = await asyncio.gather(*(one(i, q) for i, q in enumerate(queries)))
        sent_in = time.monotonic() - started
        # Poll until every answer says its durations are complete.
        while True:
            again = await asyncio.gather(*(one(i, q) for i, q in enumerate(queries)))
            if all(t["durations"] == "complete" for t, _, _ in again):
                break
            await asyncio.sleep(1.0)
        complete_after = time.monotonic() - started
    timings = [t for t, _, _ in first]
    entries = sum(n for _, n, _ in first)
    with_duration = sum(d for _, _, d in first)
    print(f"burst answered in {sent_in:.2f} s")
    return timings, entries, with_duration, complete_after


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--orgs", type=int, default=5)
    args = parser.parse_args()
    redis_proc, redis_url = start_redis()
    sim, sim_url, keys = start_simulator(
        args.orgs, 40, 0.1, 0.05, None, "--catalog", "sample", "--rate-limit", "60", "--rate-window", "60"
    )
    extra = f'[cache]\nredis_url = "{redis_url}"\n'
    services = [start_service(sim_url, keys, extra=extra, port=free_port()) for _ in range(2)]
    queries = [str(n) for n in range(1, args.queries + 1)]  # each matches a different slice of each catalog
    try:
        timings, entries, with_duration, complete_after = asyncio.run(
            burst([b for _, b in services], queries)
        )
        with urllib.request.urlopen(f"{sim_url}/_stats") as resp:
            stats = json.loads(resp.read())
    finally:
        stop(*(p for p, _ in services), sim, redis_proc)
    missing = sum(
        1 for t in timings if any(v not in ("ok", "cached") for k, v in t.items() if k.startswith("org-"))
    )
    print(
        f"{args.queries} distinct cold searches (count=50), {args.orgs} orgs at 60 requests/min/key, 2 processes"
    )
    print(f"429s drawn from upstream:            {stats['throttled']} (of {stats['requests']} requests)")
    print(f"answers missing an org:              {missing} of {len(timings)}")
    print(
        f"first answers' duration coverage:    {with_duration} of {entries} entries "
        f"({100 * with_duration / max(1, entries):.0f} %)"
    )
    print(f"every duration known after:          {complete_after:.0f} s")


if __name__ == "__main__":
    main()
