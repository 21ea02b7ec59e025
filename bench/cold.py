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
    incomplete = 0
    with_duration: list[int] = []
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
            if i >= 2:
                incomplete += 'durations;desc="complete"' not in timing
                with_duration.append(body.count(b'duration="'))
            if i == 1:  # the first two warm the parse workers and connections
                before = loop_figures(base)
            if i >= 2:
                times.append(elapsed)
        after = loop_figures(base)
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
        f"answers with every duration: {len(times) - incomplete} of {len(times)}; "
        f"fewest entries with a duration: {min(with_duration)} of {min(100, 8 * args.videos)}"
    )
    for name, label in (
        ("iteration", "the most CPU in one iteration of the loop (the stall)"),
        ("lag", "longest event-loop lag"),
        ("busy", "of it, the loop itself busy"),
    ):
        moved = "unchanged" if after[name] == before[name] else "reached during the measured searches"
        print(f"{label}: {after[name] * 1000:.1f} ms (after the two warm-up searches: {moved})")


def loop_figures(base: str) -> dict[str, float]:
    """The most CPU in one iteration of the loop, the longest timer lateness and the longest part
    of one the loop itself was busy, in s."""
    names = {
        "ilosagg_event_loop_iteration_cpu_max_seconds": "iteration",
        "ilosagg_event_loop_lag_max_seconds": "lag",
        "ilosagg_event_loop_busy_max_seconds": "busy",
    }
    with urllib.request.urlopen(f"{base}/metrics") as resp:
        lines = resp.read().decode().splitlines()
    return {names[n]: float(v) for n, v in (line.split() for line in lines if line.split()[0] in names)}


if __name__ == "__main__":
    main()
