"""Cold search: 8 orgs answering in 100 ms, durations in 50 ms, 25 videos each, nothing cached.

    python -m bench.cold [--requests 30]

Default settings, except a `rate_limit` that does not bind (the budget is
bench.burst's subject): every lookup the budget allows starts at once.

Each request is a new query, so every org answer is a miss; durations are
kept for one second (the shortest `duration_ttl`) and requests are spaced
past that, so every duration is looked up again. The floor is 150 ms: one
search round trip, then one metadata round trip.
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from bench.processes import start_service, start_simulator, stop

FLOOR_MS = 150.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rate-limit", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=25, help="videos per org (all match)")
    parser.add_argument("--parse-workers", type=int, default=2)
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(8, args.videos, 0.100, 0.050)
    extra = f"rate_limit = {args.rate_limit}\n[cache]\nduration_ttl = 1\nsearch_ttl = 1\n"
    service, base = start_service(sim_url, keys, extra=extra, parse_workers=args.parse_workers)
    times = []
    try:
        for i in range(args.requests + 2):
            time.sleep(1.1)  # let the one-second durations expire
            started = time.perf_counter()
            with urllib.request.urlopen(f"{base}/search.atom?q=lecture+{i}&count=100") as resp:
                body = resp.read()
                timing = resp.headers["Server-Timing"]
            elapsed = (time.perf_counter() - started) * 1000
            assert (
                body.count(b"<entry>") == min(100, 8 * args.videos)
                and 'desc="ok"' in timing
                and "error" not in timing
            )
            assert body.count(b'duration="') == min(100, 8 * args.videos), (
                "every entry must carry its duration"
            )
            assert 'durations;desc="complete"' in timing
            if i == 1:  # the first two warm the parse workers and connections
                lag_before = loop_lag_max(base)
            if i >= 2:
                times.append(elapsed)
        lag = loop_lag_max(base)
    finally:
        stop(service, sim)
    times.sort()
    p50, p90 = statistics.median(times), times[int(len(times) * 0.9) - 1]
    print(f"rate_limit={args.rate_limit} parse_workers={args.parse_workers} requests={len(times)}")
    print(
        f"p50 {p50:.0f} ms ({p50 / FLOOR_MS:.2f}x floor)   p90 {p90:.0f} ms   "
        f"min {times[0]:.0f} ms   max {times[-1]:.0f} ms"
    )
    print(
        f"longest event-loop lag: {lag * 1000:.1f} ms (after the two warm-up searches: "
        f"{'unchanged' if lag == lag_before else 'reached during the measured searches'})"
    )


def loop_lag_max(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("ilosagg_event_loop_lag_max_seconds "):
                return float(line.split()[-1])
    return 0.0


if __name__ == "__main__":
    main()
