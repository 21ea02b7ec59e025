"""A population of feed readers: are polled feeds answered from fresh cache?

    python -m bench.readers [--subscriptions 200] [--factor 30] [--minutes 20]

Each simulated reader polls one feed every 15-60 minutes (its own interval,
with 10 % jitter per poll), conditionally (If-None-Match) as readers do. Half
the feeds search every org, half one org. Time is compressed by `--factor`:
`search_ttl` (300 s), `rate_window` (60 s), `subscription_idle` and the poll
intervals are all divided by it, so the budget per window and the number of
polls per TTL are those of real time. The service runs with Redis, as
replicas would, and `refresh_share` at its default (0.3).

A poll counts as answered from fresh cache when every org in its
`Server-Timing` says `cached`: nobody waited for ilos. Each reader's first
two polls are left out (a feed is a subscription from its second poll on).
The simulator counts the requests the service spent.

At the end, one upload is made through the simulator, which calls the
service's webhook: the time until it shows in a subscribed feed is reported
in real seconds (webhooks are not compressed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import urllib.request

import aiohttp

from bench.processes import start_redis, start_service, start_simulator, stop

WORDS = ["lecture", "seminar", "lab", "safety", "induction", "review", "project", "exam", "guide", "intro"]
SECRET = "bench-webhook-secret-0123456789"


def stats(sim_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{sim_url}/_stats") as resp:
        result: dict[str, int] = json.loads(resp.read())
        return result


async def reader(
    session: aiohttp.ClientSession,
    url: str,
    interval: float,
    stop_at: float,
    outcomes: list[tuple[float, bool, float]],
    rng: random.Random,
) -> None:
    """Polls `url` until `stop_at`; appends (time, answered from fresh cache, seconds taken)."""
    await asyncio.sleep(rng.uniform(0, interval))  # readers do not start together
    etag: str | None = None
    polls = 0
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        headers = {"If-None-Match": etag} if etag else {}
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            etag = resp.headers.get("ETag", etag)
            orgs = [
                m for m in resp.headers.get("Server-Timing", "").split(",") if m.strip().startswith("org-")
            ]
            fresh = bool(orgs) and all('desc="cached"' in m for m in orgs)
        polls += 1
        if polls > 2:
            outcomes.append((time.monotonic(), fresh, time.perf_counter() - started))
        await asyncio.sleep(interval * rng.uniform(0.9, 1.1))


async def upload_latency(session: aiohttp.ClientSession, base: str, sim_url: str) -> float:
    """Seconds from an upload (and its webhook) until the new video is in a subscribed feed."""
    url = f"{base}/search.atom?q=lecture&org=org0&sort=date"
    for _ in range(2):
        async with session.get(url) as resp:
            await resp.read()
    await asyncio.sleep(2.5)  # a refresher pass learns the subscription
    hook = f"{base}/hooks/ilos/org0/{SECRET}"
    started = time.monotonic()
    async with session.post(f"{sim_url}/_upload", params={"org": "org0", "webhook": hook}) as resp:
        uploaded = await resp.json()
    assert uploaded["webhook_status"] == 202, uploaded
    while time.monotonic() - started < 120:
        async with session.get(url) as resp:
            if uploaded["randtag"].encode() in await resp.read():
                return time.monotonic() - started
        await asyncio.sleep(0.25)
    return float("inf")


async def run(args: argparse.Namespace, base: str, sim_url: str) -> dict[str, float]:
    rng = random.Random(7)
    outcomes: list[tuple[float, bool, float]] = []
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        before = stats(sim_url)
        readers = []
        for i in range(args.subscriptions):
            query = f"{rng.choice(WORDS)} {i}"
            scope = "" if i % 2 == 0 else f"&org=org{i % args.orgs}"
            url = f"{base}/search.{rng.choice(['atom', 'rss', 'json'])}?q={query}{scope}&sort=date"
            interval = rng.uniform(15 * 60, 60 * 60) / args.factor
            readers.append(reader(session, url, interval, stop_at, outcomes, rng))
        await asyncio.gather(*readers)
        after = stats(sim_url)
        elapsed = time.monotonic() - started
        upload_seconds = await upload_latency(session, base, sim_url)
    # Leave out the first search_ttl: until then every feed is new.
    settled = [o for o in outcomes if o[0] - started > 300 / args.factor]
    fresh = sum(1 for _, ok, _ in settled if ok)
    waits = sorted(t for _, _, t in settled)
    windows = elapsed / (60 / args.factor)
    return {
        "polls": len(settled),
        "fresh_share": fresh / len(settled) if settled else 0.0,
        "p50_ms": statistics.median(waits) * 1000 if waits else 0.0,
        "p99_ms": waits[int(len(waits) * 0.99) - 1] * 1000 if waits else 0.0,
        "searches": after["search"] - before["search"],
        "metadata": after["metadata"] - before["metadata"],
        "throttled": after["throttled"] - before["throttled"],
        "windows": windows,
        "upload_seconds": upload_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--factor", type=int, default=30, help="time compression (60 must divide by it)")
    parser.add_argument("--minutes", type=float, default=20.0, help="real minutes to run")
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--rate-limit", type=int, default=120, help="per key per (compressed) minute")
    args = parser.parse_args()
    ttl, window = 300 // args.factor, 60 // args.factor
    redis, redis_url = start_redis()
    sim, sim_url, keys = start_simulator(
        args.orgs,
        25,
        0.1,
        0.05,
        None,
        "--rate-limit",
        str(args.rate_limit),
        "--rate-window",
        str(window),
    )
    extra = (
        f"rate_limit = {args.rate_limit}\nrate_window = {window}\n"
        f'[cache]\nredis_url = "{redis_url}"\nsearch_ttl = {ttl}\n'
        f"subscription_idle = {max(60, 172_800 // args.factor)}\n"
    )
    service, base = start_service(sim_url, keys, extra=extra, access_log=False, webhook_secret=SECRET)
    try:
        result = asyncio.run(run(args, base, sim_url))
    finally:
        stop(service, sim, redis)
    per_org_window = (result["searches"] + result["metadata"]) / args.orgs / result["windows"]
    print(
        f"{args.subscriptions} subscriptions, {args.orgs} orgs, time x{args.factor}, "
        f"search_ttl {ttl} s, rate_limit {args.rate_limit} per {window} s window"
    )
    print(
        f"polls after the first TTL: {result['polls']:.0f}, answered from fresh cache: "
        f"{result['fresh_share'] * 100:.1f} %  (p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms)"
    )
    print(
        f"upstream: {result['searches']:.0f} searches, {result['metadata']:.0f} lookups, "
        f"{result['throttled']:.0f} throttled; {per_org_window:.1f} requests per org per window "
        f"({per_org_window / args.rate_limit * 100:.0f} % of the budget)"
    )
    print(f"upload to subscribed feed: {result['upload_seconds']:.1f} s (real time)")


if __name__ == "__main__":
    main()
