"""What free requests can make Redis hold, and what a stalled Redis costs a search (issue 26).

    python -m bench.redisbounds [--variants 3000] [--service-root PATH]

One `serve` process on a private Redis, the simulated ilos of 3 orgs of 40 videos.
1. One query searched once (`count=1`), then `--variants` pages past the first
   (`startIndex=2...`), none of which costs an upstream request: the keys and the
   bytes (`used_memory`) they add to Redis.
2. Redis paused (`CLIENT PAUSE 4000 ALL`) while 24 new searches run 8 at a time,
   `upstream.deadline` 3 s: the longest search.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path

import aiohttp
import redis

from bench.processes import ROOT, start_redis, start_service, start_simulator, stop


async def pages(base: str, variants: int) -> None:
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(16)

        async def one(start: int) -> None:
            async with (
                sem,
                session.get(
                    f"{base}/search.atom", params={"q": "lecture", "count": "1", "startIndex": str(start)}
                ) as resp,
            ):
                await resp.read()

        await one(1)
        await asyncio.gather(*(one(s) for s in range(2, variants + 2)))


async def paused(base: str, direct: redis.Redis) -> float:
    """The longest of 24 searches run 8 at a time while Redis is paused for 4 s."""
    took: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def one(q: str) -> None:
            started = time.monotonic()
            async with session.get(f"{base}/search.atom", params={"q": q}) as resp:
                await resp.read()
            took.append(time.monotonic() - started)

        direct.execute_command("CLIENT", "PAUSE", "4000", "ALL")
        words = [f"paused {n}" for n in range(24)]
        for batch in range(0, 24, 8):
            await asyncio.gather(*(one(q) for q in words[batch : batch + 8]))
    return max(took)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", type=int, default=3000)
    parser.add_argument("--service-root", type=Path, default=ROOT)
    args = parser.parse_args()
    redis_proc, redis_url = start_redis()
    sim, sim_url, keys = start_simulator(3, 40, 0.05, 0.02, None)
    extra = f'deadline = 3.0\n[cache]\nredis_url = "{redis_url}"\n'
    service, base = start_service(sim_url, keys, extra=extra, root=args.service_root)
    direct = redis.Redis.from_url(redis_url)
    try:
        before = set(direct.keys("*"))
        keys_before, bytes_before = len(before), int(direct.info("memory")["used_memory"])
        started = time.monotonic()
        asyncio.run(pages(base, args.variants))
        elapsed = time.monotonic() - started
        time.sleep(2)  # the subscriptions' tally is written out every second
        added = direct.dbsize() - keys_before
        grown = int(direct.info("memory")["used_memory"]) - bytes_before
        kinds = Counter(
            k.split(b":")[2].decode() for k in set(direct.keys("*")) - before if k.count(b":") >= 2
        )
        print(
            f"{args.variants} pages past the first of one query, in {elapsed:.1f} s: "
            f"{added} keys and {grown / 1e6:.2f} MB added to Redis; by kind: {dict(kinds.most_common())}"
        )
        longest = asyncio.run(paused(base, direct))
        print(f"24 searches, 8 at a time, Redis paused 4 s, deadline 3 s: the longest took {longest:.2f} s")
    finally:
        stop(service, sim, redis_proc)


if __name__ == "__main__":
    main()
