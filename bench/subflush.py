"""What a flush of polled feeds costs when many readers subscribe at once.

    python -m bench.subflush [--held 19000] [--new 1000]

`--held` subscriptions are kept fresh already; `--new` feed URLs are each polled
twice (two flush intervals), so the second flush makes that many new
subscriptions, each checked against the caps. Measured against a private Redis
(`redis-server` on a free port) and against the in-process cache alone (a
service without Redis, or in an outage): how long the second flush takes, and
the longest the event loop went without a turn meanwhile (a ticker counts
them), which is what every request waited at worst.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis

from aggregator.caller import Caller
from aggregator.config import parse_config_text
from aggregator.freshness.subscriptions import DUE, Subscriptions
from aggregator.render.formats import FORMATS
from aggregator.store.cache import Cache
from aggregator.store.memory import MemoryCache
from aggregator.store.redis_cache import RedisCache
from bench.processes import start_redis, stop


async def flush_figures(cache: Cache, held: int, new: int) -> tuple[float, float]:
    """(seconds the second flush took, longest gap between loop turns in it, in seconds)."""
    config = parse_config_text('[[orgs]]\nid = "a"\napi_key = "k"\n')
    subs = Subscriptions(config, cache, time.time, {f.name: f.path for f in FORMATS})
    caller = Caller(None, ("a",))
    await cache.schedule(DUE, {f"held{i:06d}": time.time() + 3600 for i in range(held)}, 86_400)
    for _ in range(2):
        for i in range(new):
            subs.polled(
                f"atom/search.atom?q=topic{i}#",
                "atom",
                f"/search.atom?q=topic{i}",
                caller,
                lambda i=i: f"reader{i % 50}",
            )
        if _ == 0:
            await subs.flush()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await subs.flush()
    took = time.perf_counter() - started
    done.set()
    await ticking
    return took, max(gaps, default=took)


@asynccontextmanager
async def private_redis() -> AsyncIterator[Cache]:
    server, url = start_redis()
    client = redis.Redis.from_url(url)
    try:
        yield RedisCache(client)
    finally:
        await client.aclose()
        stop(server)


async def main_async(held: int, new: int) -> None:
    print(f"{held} subscriptions held, {new} new in one flush")
    async with private_redis() as cache:
        took, gap = await flush_figures(cache, held, new)
        print(f"  Redis:     flush {took * 1000:8.1f} ms, longest without a turn {gap * 1000:6.1f} ms")
    took, gap = await flush_figures(MemoryCache(), held, new)
    print(f"  in-memory: flush {took * 1000:8.1f} ms, longest without a turn {gap * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=19_000)
    parser.add_argument("--new", type=int, default=1_000)
    args = parser.parse_args()
    asyncio.run(main_async(args.held, args.new))


if __name__ == "__main__":
    main()
