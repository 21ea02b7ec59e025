"""Soak: slow-header clients and a stream of distinct queries against a 2,000-item org.

    python -m bench.soak [--queries 20000] [--slow 400] [--concurrency 8]

The service runs with `cache.memory_max_bytes = 64 MiB` and a `rate_limit`
that does not bind. Meanwhile `--slow` connections trickle header lines and
never finish them (reopened whenever the service cuts them off), a pool of
clients sends `--queries` distinct cold searches, and a well-behaved prober
asks for a cached feed every 100 ms. Reports the serving process's peak RSS
(its parse workers apart), the prober's p99, and the longest event-loop stall
the service saw: the loop's own busy time (`ilosagg_event_loop_busy_max_seconds`),
of it at most the loop thread's CPU time (`ilosagg_event_loop_cpu_max_seconds`:
not steal time, GIL waits or blocking calls), and, beside it, the whole
lateness of its 50 ms timer, waiting for a CPU included
(`ilosagg_event_loop_lag_max_seconds`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from bench.processes import start_service, start_simulator, stop


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def slow_client(port: int, stop_at: float) -> int:
    """Trickle header lines, one every 0.5 s; when cut off, come back. Returns how often it was cut off."""
    cut = 0
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /search.atom?q=slow HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() < stop_at and not reader.at_eof():
                writer.write(b"X-Slow: " + b"a" * 200 + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.5)
            writer.close()
            cut += 1
        except (ConnectionError, OSError):
            cut += 1
            await asyncio.sleep(0.1)
    return cut


BUSY_BUCKET = 'ilosagg_event_loop_busy_seconds_bucket{le="'


def worst_within(before: dict[float, float], after: dict[float, float]) -> str:
    """The smallest bucket bound that holds every tick between two readings: the longest stall, to a bucket."""
    ticks = after[float("inf")] - before[float("inf")]
    for bound in sorted(after):
        if after[bound] - before[bound] >= ticks:
            return f"<= {bound * 1000:.0f} ms" if bound != float("inf") else "> the largest bucket"
    return "unknown"


def lag_figures(base: str) -> dict[str, Any]:
    """Ticks of the 50 ms lag timer; of them late by more than 20 ms, in all and by the loop's own
    work (`busy`, waiting for a CPU left out); the longest of each, in s; and the busy histogram
    itself (`busy_buckets`: ticks held up by at most each bound, bounds as the service reports them)."""
    with urllib.request.urlopen(f"{base}/metrics") as resp:
        lines = resp.read().decode().splitlines()

    def value(prefix: str) -> float:
        return next(float(line.split()[-1]) for line in lines if line.startswith(prefix))

    count = value("ilosagg_event_loop_lag_seconds_count ")
    busy_buckets = {
        float(line[len(BUSY_BUCKET) :].split('"', 1)[0]): float(line.split()[-1])
        for line in lines
        if line.startswith(BUSY_BUCKET)
    }
    return {
        "busy_buckets": busy_buckets,
        "ticks": count,
        "late": count - value('ilosagg_event_loop_lag_seconds_bucket{le="0.02"}'),
        "busy_late": count - value('ilosagg_event_loop_busy_seconds_bucket{le="0.02"}'),
        "cpu_late": count - value('ilosagg_event_loop_cpu_seconds_bucket{le="0.02"}'),
        "lag_max": value("ilosagg_event_loop_lag_max_seconds "),
        "busy_max": value("ilosagg_event_loop_busy_max_seconds "),
        "cpu_max": value("ilosagg_event_loop_cpu_max_seconds "),
    }


async def run(base: str, port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    peak = rss_mb(pid)
    probes: list[float] = []
    errors = 0
    done = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(f"{base}/search.atom?q=probe") as resp:
            await resp.read()  # the prober's feed, cached from now on
        stop_at = time.monotonic() + 3600
        slow = [asyncio.create_task(slow_client(port, stop_at)) for _ in range(args.slow)]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.queries):
            queue.put_nowait(i)

        async def worker() -> None:
            nonlocal errors, done
            while not queue.empty():
                i = queue.get_nowait()
                try:
                    async with session.get(f"{base}/search.atom", params={"q": f"lecture {i}"}) as resp:
                        await resp.read()
                        errors += resp.status >= 500
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                done += 1

        async def prober() -> None:
            while not queue.empty():
                started = time.perf_counter()
                async with session.get(f"{base}/search.atom?q=probe") as resp:
                    await resp.read()
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)

        async def watch() -> None:
            nonlocal peak
            last = time.monotonic()
            while not queue.empty():
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.5)
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    print(f"  {done} queries, RSS {rss_mb(pid):.0f} MB (peak {peak:.0f})", flush=True)

        before = lag_figures(base)
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)), prober(), watch())
        elapsed = time.monotonic() - started
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    after = lag_figures(base)
    probes.sort()
    return {
        "elapsed": elapsed,
        "peak": peak,
        "p50": statistics.median(probes) * 1000,
        "p99": probes[int(len(probes) * 0.99) - 1] * 1000,
        "stall": after["lag_max"] * 1000,
        "stall_before": before["lag_max"] * 1000,
        "busy": after["busy_max"] * 1000,
        "busy_before": before["busy_max"] * 1000,
        "ticks": after["ticks"] - before["ticks"],
        "late": after["late"] - before["late"],
        "busy_late": after["busy_late"] - before["busy_late"],
        "cpu": after["cpu_max"] * 1000,
        "cpu_before": before["cpu_max"] * 1000,
        "cpu_late": after["cpu_late"] - before["cpu_late"],
        "busy_during": worst_within(before["busy_buckets"], after["busy_buckets"]),
        "errors": errors,
        "probes": len(probes),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--slow", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--nice",
        action="store_true",
        help="run the load generator and the simulator at lower CPU priority than the service",
    )
    parser.add_argument("--trace", metavar="OUT.json", help="run the service under bench.turntrace")
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(1, 2000, 0.02, 0.002)
    extra = "rate_limit = 1000000\n[cache]\nmemory_max_bytes = 67108864\n"
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, sim.pid, 10)
    try:
        service, base = start_service(sim_url, keys, extra=extra, access_log=False, trace=args.trace)
    except BaseException:
        stop(sim)
        raise
    port = int(base.rsplit(":", 1)[1])
    if args.nice:
        os.nice(10)  # this process: the slow clients, the query pool and the prober
    try:
        result = asyncio.run(run(base, port, service.pid, args))
    finally:
        stop(service, sim)
    print(
        f"{args.queries} distinct queries against one 2,000-item org, {args.slow} slow-header clients, "
        f"memory_max_bytes 64 MiB, {result['elapsed']:.0f} s"
    )
    print(f"peak RSS of the serving process:   {result['peak']:.0f} MB   (target < 250 MB)")
    print(
        f"well-behaved prober, {result['probes']} requests: p50 {result['p50']:.1f} ms, "
        f"p99 {result['p99']:.1f} ms   (target p99 < 1 s)"
    )
    print(
        f"longest event-loop stall, the loop itself busy: {result['busy']:.1f} ms   (target <= 20 ms); "
        f"before the load began (start-up and the first cold query): {result['busy_before']:.1f} ms; "
        f"during the load: {result['busy_during']}"
    )
    print(
        f"  of it, at most the loop's own CPU work: {result['cpu']:.1f} ms; "
        f"before the load began: {result['cpu_before']:.1f} ms; "
        f"ticks held up > 20 ms by it: {result['cpu_late']:.0f}"
    )
    print(
        f"longest timer lateness, waiting for a CPU included: {result['stall']:.1f} ms; "
        f"before the load began: {result['stall_before']:.1f} ms"
    )
    ticks = max(1, result["ticks"])
    print(
        f"50 ms ticks late by > 20 ms: {result['late']:.0f} of {result['ticks']:.0f} "
        f"({100 * result['late'] / ticks:.2f} %); by the loop's own work: {result['busy_late']:.0f} "
        f"({100 * result['busy_late'] / ticks:.2f} %)"
    )
    print(f"5xx or failed queries:             {result['errors']}")


if __name__ == "__main__":
    main()
