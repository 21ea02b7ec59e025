"""Redis stopped mid-burst, then started again empty: how many searches reach ilos in one window?

    python -m bench.redisfault [--processes 1] [--service-root PATH]

One org whose key allows 20 requests a minute (lookups get none of it, so each
search is one request; the simulated ilos refuses nothing, so every request the
service sends is counted), one or two `serve`
processes on one Redis without persistence. Three
phases of 25 distinct searches: with Redis, with Redis stopped, and with Redis
started again empty (after `redis_retry_seconds`, so the service asks it
again). All within one minute: ilos should see 20 at most.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from bench.processes import ROOT, redis_port, start_redis, start_replicas, start_simulator, stop


def phase(bases: list[str], start: int) -> None:
    for n in range(start, start + 25):
        url = f"{bases[n % len(bases)]}/search.atom?q={n}&count=5"
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()


def searches(sim_url: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"{sim_url}/_stats") as resp:
        stats = json.loads(resp.read())
    return stats["search"] - stats["throttled"], stats["throttled"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--service-root", type=Path, default=ROOT)
    args = parser.parse_args()
    redis_proc, redis_url = start_redis()
    port = redis_port(redis_url)
    sim, sim_url, keys = start_simulator(
        1, 40, 0.0, 0.0, None
    )  # ilos refusing nothing: we count what is sent
    extra = f'rate_limit = 20\nsearch_reserve = 1.0\n[cache]\nredis_url = "{redis_url}"\nredis_retry_seconds = 1\n'
    services = start_replicas(args.processes, sim_url, keys, extra=extra, root=args.service_root)
    bases = [b for _, b in services]
    started = time.monotonic()
    try:
        phase(bases, 0)
        print(f"with Redis:               {searches(sim_url)[0]} searches reached ilos")
        stop(redis_proc)
        phase(bases, 100)
        print(f"Redis stopped:            {searches(sim_url)[0]} in all")
        redis_proc, _ = start_redis(port)
        time.sleep(1.5)  # past redis_retry_seconds
        phase(bases, 200)
        print(f"Redis started again empty: {searches(sim_url)[0]} in all")
        print(f"all within {time.monotonic() - started:.0f} s of a 60 s window; the key allows 20")
    finally:
        stop(*(p for p, _ in services), sim, redis_proc)


if __name__ == "__main__":
    main()
