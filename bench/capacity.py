"""How far does each key's budget go at a campus's peak? Complete answers against an ideal scheduler.

    python -m bench.capacity [--processes 1|2] [--seconds 100] [--rate 30] [--seed 1] [--no-latency]

Issue 25's scenario, time compressed 6 x: 20 organisations of 400 videos (no
duration in their feeds); ilos allows 60 requests per rolling 10 s per key (a
minute) and counts each request when it arrives, 40-120 ms after it was sent;
searches take 80 ms and metadata 40 ms more; `search_ttl` is 50 s (300). 30
searches a second (300 a minute) drawn Zipf(1.0) from 5,000 distinct queries,
for 100 s (10 minutes), the first 20 s (2 minutes) a warm-up left out of the
figures. One process (or `--processes 2`) and one Redis.

The ideal scheduler: time is cut into `search_ttl` periods; in each, each key
answers `rate_limit x search_ttl / rate_window x 0.75` distinct queries (225;
a quarter is left for durations), the ones asked most often in that period,
known in hindsight. Its share is the fraction of the answers after warm-up whose
query is among those, computed from the same arrivals the service had.

Reports: answers complete (every org ok, cached or stale) and fresh (every org ok
or cached), against the ideal; answers whose durations were complete (Server-Timing
`durations`: since issue 25, of the videos the page shows); latency p50/p99; requests ilos refused (429);
upstream searches per (org, query, TTL period) that had any; metadata calls per
complete answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from aggregator.web.accesslog import org_outcomes
from bench.budget import distinct_queries
from bench.processes import ROOT, start_redis, start_replicas, start_simulator, stop

ORGS = 20
VIDEOS = 400
LIMIT = 60
WINDOW = 10.0  # seconds: ilos's minute, compressed 6 x
TTL = 50.0  # search_ttl: 300 s, compressed
DURATION_SHARE = 0.25  # what the ideal scheduler leaves for durations
DEADLINE = 5.0  # the service's default upstream.deadline


@dataclass(frozen=True)
class Sent:
    at: float  # seconds since the load started
    query: str
    seconds: float
    status: int | str
    timing: str  # Server-Timing


async def load(bases: list[str], queries: list[str], args: argparse.Namespace) -> tuple[list[Sent], float]:
    """The searches on a Poisson schedule; what each got, and when the load started (monotonic)."""
    rng = random.Random(args.seed)
    weights = [1 / (rank + 1) for rank in range(len(queries))]  # Zipf(1.0)
    sent: list[Sent] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int, at: float, query: str) -> None:
            began = time.monotonic()
            try:
                async with session.get(f"{bases[n % len(bases)]}/search.atom", params={"q": query}) as resp:
                    await resp.read()
                    status: int | str = resp.status
                    timing = resp.headers.get("Server-Timing", "")
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, timing = type(exc).__name__, ""
            sent.append(Sent(at, query, time.monotonic() - began, status, timing))

        tasks = []
        started = time.monotonic()
        at, n = 0.0, 0
        while at < args.seconds:
            at += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            tasks.append(asyncio.create_task(one(n, at, rng.choices(queries, weights)[0])))
            n += 1
        await asyncio.gather(*tasks)
    return sorted(sent, key=lambda s: s.at), started


def ideal_share(sent: list[Sent], warm_up: float) -> float:
    """The share of answers after warm-up that the ideal scheduler answers (see the module's doc)."""
    per_key = int(LIMIT * TTL / WINDOW * (1 - DURATION_SHARE))
    periods: dict[int, Counter[str]] = {}
    for s in sent:
        periods.setdefault(int(s.at // TTL), Counter())[s.query] += 1
    served = {p: {q for q, _ in counts.most_common(per_key)} for p, counts in periods.items()}
    counted = [s for s in sent if s.at >= warm_up]
    return sum(1 for s in counted if s.query in served[int(s.at // TTL)]) / max(1, len(counted))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--warm-up", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=30.0, help="searches a second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--service-root", type=Path, default=ROOT, help="run the service from this checkout")
    parser.add_argument("--one-off-reserve", type=float, default=None, help="default: the service's")
    parser.add_argument(
        "--no-latency", action="store_true", help="ilos answers and counts at once (the issue's control row)"
    )
    args = parser.parse_args()
    search_latency, metadata_latency, arrival = (0.0, 0.0, "0") if args.no_latency else (0.08, 0.04, "0.04")
    arrival_most = "0" if args.no_latency else "0.12"

    redis_proc, redis_url = start_redis()
    sim, sim_url, keys = start_simulator(
        ORGS, VIDEOS, search_latency, metadata_latency, None,
        "--catalog", "sample", "--rate-limit", str(LIMIT), "--rate-window", str(WINDOW),
        "--arrival-delay", arrival, arrival_most, "--max-results", "25",
    )  # fmt: skip
    reserve = f"one_off_reserve = {args.one_off_reserve}\n" if args.one_off_reserve is not None else ""
    extra = (
        f"rate_limit = {LIMIT}\nrate_window = {WINDOW:g}\n{reserve}"
        f'[cache]\nredis_url = "{redis_url}"\nsearch_ttl = {TTL:g}\nincomplete_ttl = 3\n'
    )
    services = start_replicas(args.processes, sim_url, keys, extra=extra, root=args.service_root)
    queries = distinct_queries(args.queries, random.Random(args.seed))
    try:
        sent, started = asyncio.run(load([b for _, b in services], queries, args))
        with urllib.request.urlopen(f"{sim_url}/_stats?calls=1") as resp:
            stats = json.loads(resp.read())
    finally:
        stop(*(p for p, _ in services), sim, redis_proc)

    counted = [s for s in sent if s.at >= args.warm_up]
    answered = [s for s in counted if s.status == 200]
    outcomes = [set(org_outcomes(s.timing).values()) for s in answered]
    complete = sum(1 for o in outcomes if o and o <= {"ok", "cached", "stale"})
    fresh = sum(1 for o in outcomes if o and o <= {"ok", "cached"})
    timed = [s for s in answered if 'durations;desc="complete"' in s.timing]
    ideal = ideal_share(sent, args.warm_up)
    latencies = sorted(s.seconds * 1000 for s in answered)
    refused = sum(o["throttled"] for o in stats["orgs"].values())
    # Upstream calls, over the whole run (the simulator's clock is monotonic, like ours).
    periods: Counter[tuple[str, str, int]] = Counter()
    metadata = 0
    for org, endpoint, arg, at in stats["calls"]:
        if endpoint == "search":
            periods[(org, arg, int((at - started) // TTL))] += 1
        elif endpoint == "metadata":
            metadata += 1
    complete_all = sum(
        1
        for s in sent
        if s.status == 200 and (o := set(org_outcomes(s.timing).values())) and o <= {"ok", "cached", "stale"}
    )
    share = complete / max(1, len(counted))
    print(
        f"{args.processes} process(es); {len(sent)} searches in {args.seconds:.0f} s ({args.rate:g}/s, "
        f"Zipf(1.0) over {len(queries)} queries); {len(counted)} after the {args.warm_up:.0f} s warm-up"
    )
    print(f"{'complete (every org ok, cached or stale)':46} {100 * share:5.1f} %")
    print(f"{'the ideal scheduler':46} {100 * ideal:5.1f} %  -> ratio {share / ideal:.2f}")
    print(f"{'fresh (every org ok or cached)':46} {100 * fresh / max(1, len(counted)):5.1f} %")
    print(
        f"{'durations complete (of what the page shows)':46} {100 * len(timed) / max(1, len(counted)):5.1f} %"
    )
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"{'latency p50 / p99':46} {statistics.median(latencies):.0f} / {p99:.0f} ms (deadline {DEADLINE:g} s)"
        )
    print(f"{'refused by ilos (429)':46} {refused}")
    print(
        f"{'upstream searches per (org, query, TTL period)':46} "
        f"{sum(periods.values()) / max(1, len(periods)):.2f} ({sum(periods.values())} searches)"
    )
    print(
        f"{'metadata calls per complete answer':46} {metadata / max(1, complete_all):.2f} "
        f"({metadata} calls, {complete_all} complete answers in the whole run)"
    )


if __name__ == "__main__":
    main()
