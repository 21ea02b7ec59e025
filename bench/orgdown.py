"""The queries right after an org dies, against healthy ones.

    python -m bench.orgdown [--rounds 15]

Eight orgs answering in 100 ms (durations cached after the first query), a
2 s upstream timeout. One org then stops answering. The first queries after
that wait for it (until its timeout, or the search deadline); after three
failures its breaker opens and it is skipped. Reports p50 of healthy
queries, what the first three after the death took, and p50 once the
breaker is open, against the healthy figure (goal: at most 1.1x).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from bench.processes import start_service, start_simulator, stop


def timed(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url) as resp:
        resp.read()
        timing = resp.headers["Server-Timing"]
    return (time.perf_counter() - started) * 1000, timing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(8, 25, 0.100, 0.050)
    try:
        service, base = start_service(sim_url, keys, extra="rate_limit = 1000000\n", timeout=2.0)
    except BaseException:
        stop(sim)
        raise
    n = 0

    def query() -> tuple[float, str]:
        nonlocal n
        n += 1
        return timed(f"{base}/search.atom?q=lecture+{n}&count=100")

    try:
        for _ in range(3):
            query()  # warm: parse workers, connections, the duration cache
        healthy = [query()[0] for _ in range(args.rounds)]
        urllib.request.urlopen(
            urllib.request.Request(f"{sim_url}/_fault?org=org3&fault=timeout", method="POST")
        )
        first = [query() for _ in range(3)]
        after = [query() for _ in range(args.rounds)]
    finally:
        stop(service, sim)
    assert all("org-org3;dur=" in t and 'desc="skipped"' in t for _, t in after)
    p50_healthy, p50_after = statistics.median(healthy), statistics.median(ms for ms, _ in after)
    print(f"healthy p50:                 {p50_healthy:.0f} ms")
    print(
        f"first three after the death: {', '.join(f'{ms:.0f} ms' for ms, _ in first)} (waiting for its timeout)"
    )
    print(f"breaker open, p50:           {p50_after:.0f} ms ({p50_after / p50_healthy:.2f}x healthy)")


if __name__ == "__main__":
    main()
