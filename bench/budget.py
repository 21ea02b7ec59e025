"""The upstream budget under latency: does ilos ever refuse a request?

    python -m bench.budget [--processes 1|2] [--redis-restart] [--seconds 60] [--rate 30]

A campus's load with time compressed 6 x: 20 orgs of 400 videos whose simulated
ilos allows 60 requests per rolling 10 s per key (a minute, compressed), counts
each request when it *arrives*, 40-120 ms after it was sent (jitter), and answers
searches 80 ms and metadata 40 ms after that; each answer carries its top 25.
Searches arrive at `--rate` a second (300 a minute, compressed) drawn Zipf(1.0)
from 5,000 distinct queries; `search_ttl` is 50 s (300, compressed). With
`--redis-restart`, Redis is stopped 40 % of the way through and started again
empty at 50 %, as the deploy kit's Redis without persistence comes back.

Reports, per key: the requests ilos refused (429), and the most it counted in any
rolling window (at most the limit, as ilos refuses the rest); and the answers:
how many had every org ok, cached or stale, and their latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import urllib.request
from pathlib import Path

import aiohttp

from aggregator.demo.samples import SAMPLE_TOPICS
from aggregator.web.accesslog import org_outcomes
from bench.processes import ROOT, redis_port, start_redis, start_replicas, start_simulator, stop

ORGS = 20
LIMIT = 60
WINDOW = 10  # seconds: ilos's minute, compressed 6 x


def distinct_queries(count: int, rng: random.Random) -> list[str]:
    """`count` distinct one- and two-word queries from the sample catalogues' words, in a random order."""
    words = sorted(
        {w.strip(":,.()").lower() for titles in SAMPLE_TOPICS.values() for t in titles for w in t.split()}
        - {"", "{n}"}
    )
    words = [w for w in words if len(w) >= 4 and "{" not in w]
    queries = set(words)
    while len(queries) < count:
        queries.add(f"{rng.choice(words)} {rng.choice(words)}")
    ordered = sorted(queries)
    rng.shuffle(ordered)
    return ordered[:count]


async def load(bases: list[str], queries: list[str], args: argparse.Namespace, restart) -> list[tuple]:
    """Send the searches on schedule; (seconds taken, Server-Timing) of each answer."""
    rng = random.Random(args.seed)
    weights = [1 / (rank + 1) for rank in range(len(queries))]  # Zipf(1.0)
    results: list[tuple] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(n: int, q: str) -> None:
            started = time.monotonic()
            try:
                async with session.get(
                    f"{bases[n % len(bases)]}/search.atom", params={"q": q, "count": "20"}
                ) as resp:
                    await resp.read()
                    results.append(
                        (time.monotonic() - started, resp.status, resp.headers.get("Server-Timing", ""))
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                results.append((time.monotonic() - started, type(exc).__name__, ""))

        tasks = []
        started = time.monotonic()
        at = 0.0
        n = 0
        restart_task = asyncio.create_task(restart(started)) if restart else None
        while at < args.seconds:
            at += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            tasks.append(asyncio.create_task(one(n, rng.choices(queries, weights)[0])))
            n += 1
        await asyncio.gather(*tasks)
        if restart_task is not None:
            await restart_task
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--redis-restart", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=30.0, help="searches a second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--service-root", type=Path, default=ROOT, help="run the service from this checkout")
    args = parser.parse_args()

    redis_proc, redis_url = start_redis()
    port = redis_port(redis_url)
    sim, sim_url, keys = start_simulator(
        ORGS, 400, 0.08, 0.04, None,
        "--catalog", "sample", "--rate-limit", str(LIMIT), "--rate-window", str(WINDOW),
        "--arrival-delay", "0.04", "0.12", "--max-results", "25",
    )  # fmt: skip
    extra = (
        f"rate_limit = {LIMIT}\nrate_window = {WINDOW}\n"
        f'[cache]\nredis_url = "{redis_url}"\nsearch_ttl = 50\nincomplete_ttl = 3\n'
    )
    services = start_replicas(args.processes, sim_url, keys, extra=extra, root=args.service_root)
    queries = distinct_queries(args.queries, random.Random(args.seed))
    redis_box = [redis_proc]

    async def restart(started: float) -> None:
        await asyncio.sleep(max(0.0, started + args.seconds * 0.4 - time.monotonic()))
        stop(redis_box[0])
        print(f"Redis stopped at {time.monotonic() - started:.0f} s", flush=True)
        await asyncio.sleep(max(0.0, started + args.seconds * 0.5 - time.monotonic()))
        redis_box[0], _ = start_redis(port)
        print(f"Redis started again, empty, at {time.monotonic() - started:.0f} s", flush=True)

    try:
        results = asyncio.run(
            load([b for _, b in services], queries, args, restart if args.redis_restart else None)
        )
        with urllib.request.urlopen(f"{sim_url}/_stats") as resp:
            stats = json.loads(resp.read())
    finally:
        stop(*(p for p, _ in services), sim, redis_box[0])

    orgs = stats["orgs"]
    refused = {name: o["throttled"] for name, o in orgs.items()}
    answered = [r for r in results if r[1] == 200]
    complete = sum(
        1 for _, _, timing in answered if set(org_outcomes(timing).values()) <= {"ok", "cached", "stale"}
    )
    latencies = sorted(r[0] * 1000 for r in answered)
    print(
        f"{args.processes} process(es), {len(results)} searches in {args.seconds:.0f} s "
        f"({args.rate:g}/s, Zipf over {len(queries)} queries), Redis restart: {args.redis_restart}"
    )
    print(f"upstream requests: {stats['search']} searches, {stats['metadata']} metadata")
    print(f"refused by ilos (429): {sum(refused.values())} in all; per key: max {max(refused.values())}")
    print(
        f"most ilos counted in one rolling window, per key: max {max(o['most_in_window'] for o in orgs.values())} (limit {LIMIT})"
    )
    print(
        f"answers: {len(answered)} of {len(results)} 200; every org ok, cached or stale: {complete} ({100 * complete / max(1, len(answered)):.1f} %)"
    )
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency p50 {statistics.median(latencies):.0f} ms, p99 {p99:.0f} ms")


if __name__ == "__main__":
    main()
