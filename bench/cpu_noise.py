"""How steady is this machine's CPU time? The same small step, timed many times.

    python -m bench.cpu_noise [--steps 30000] [--records 4000] [--busy 1]

The soak's stall of record is the CPU time the loop thread spent in one
iteration (`loop.lag.time_iterations`). Its rare outliers were ordinary steps
taking ten times their usual CPU. This is the control: one fixed step of
pure Python that allocates, sorts and drops `--records` small records (the
kind of work a merge does; 4,000 take 2-4 ms), with the collector off, timed with `time.thread_time`
over and over. Nothing in it varies, so whatever its slowest runs cost beyond
the median is the machine's: the host, a sibling hyperthread, caches and
memory, page faults. `--busy N` keeps N other processes spinning meanwhile,
as the soak's simulator, parse workers and load generator keep the other
core busy.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import time
from typing import Any


def step(n: int) -> int:
    """Build, sort and drop n small records: the kind of work a merge does."""
    records: list[dict[str, Any]] = [
        {"id": f"video-{i * 7919 % n}", "score": (i * 31) % 97, "title": "x" * (i % 40)} for i in range(n)
    ]
    records.sort(key=lambda r: (-r["score"], r["id"]))
    return len({r["id"] for r in records})


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--records", type=int, default=4000, help="how many records one step builds")
    parser.add_argument("--busy", type=int, default=0, help="processes that spin beside the measurement")
    args = parser.parse_args()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    gc.disable()
    cpu: list[float] = []
    wall: list[float] = []
    try:
        for _ in range(200):
            step(args.records)  # warm up
        for _ in range(args.steps):
            w0, c0 = time.perf_counter(), time.thread_time()
            step(args.records)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    finally:
        for p in spinners:
            p.kill()
    cpu_ms = sorted(c * 1000 for c in cpu)
    median = statistics.median(cpu_ms)

    def at(q: float) -> float:
        return cpu_ms[min(len(cpu_ms) - 1, int(len(cpu_ms) * q))]

    print(
        f"{args.steps} runs of one fixed step ({args.records} records), {args.busy} spinning process(es) beside it"
    )
    print(
        f"CPU time of the step: median {median:.2f} ms, p99 {at(0.99):.2f}, p99.9 {at(0.999):.2f}, "
        f"p99.99 {at(0.9999):.2f}, max {cpu_ms[-1]:.2f} ms ({cpu_ms[-1] / median:.1f}x the median)"
    )
    for times in (3, 5, 10):
        over = sum(c > times * median for c in cpu_ms)
        print(f"  runs over {times}x the median: {over} ({100 * over / len(cpu_ms):.3f} %)")
    print(
        f"wall time of the step: median {statistics.median(wall) * 1000:.2f} ms, max {max(wall) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
