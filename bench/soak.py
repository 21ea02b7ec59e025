"""Soak: slow-header clients and a stream of distinct queries against a 2,000-item org.

    python -m bench.soak [--queries 20000] [--slow 400] [--concurrency 8]

The service runs with `cache.memory_max_bytes = 64 MiB` and a `rate_limit`
that does not bind. Meanwhile `--slow` connections trickle header lines and
never finish them (reopened whenever the service cuts them off), a pool of
clients sends `--queries` distinct cold searches, and a well-behaved prober
asks for a cached feed every 100 ms. Reports the serving process's peak RSS
(its parse workers apart), the prober's p99, and the longest event-loop stall:
the most CPU the loop thread spent in one iteration of the loop, which the
service itself reports (`ilosagg_event_loop_iteration_cpu_max_seconds`, see
`loop.lag.time_iterations`): how long the service's own work held the loop.

Beside it, what a 50 ms timer saw: how late it fired
(`ilosagg_event_loop_lag_max_seconds`), and of that the part the loop was not
waiting for a core (`..._busy_max_seconds`). On a virtual machine both also
count the host not running the guest (steal), even while the loop sat idle
in `select`, which no service can shorten. So the service also runs under
`bench.turntrace`'s light mode, which splits every iteration of 15 ms or more
outside `select` into the loop's CPU, waiting for a core, and neither: steal,
or the GIL held by another thread (the serving process runs none: its parse
workers are processes, and the rate limits it counts without Redis are
`limiter.MemoryWindows`, plain code on the loop). The load generator reads
`/proc/stat`'s steal counter every 10 ms to check the long ones against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
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
ITERATION_BUCKET = 'ilosagg_event_loop_iteration_cpu_seconds_bucket{le="'


def buckets(lines: list[str], prefix: str) -> dict[float, float]:
    """A histogram's cumulative counts by bound, as the service reports them."""
    return {
        float(line[len(prefix) :].split('"', 1)[0]): float(line.split()[-1])
        for line in lines
        if line.startswith(prefix)
    }


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
    return {
        "busy_buckets": buckets(lines, BUSY_BUCKET),
        "iteration_buckets": buckets(lines, ITERATION_BUCKET),
        "iteration_max": value("ilosagg_event_loop_iteration_cpu_max_seconds "),
        "iteration_late": value("ilosagg_event_loop_iteration_cpu_seconds_count ")
        - value('ilosagg_event_loop_iteration_cpu_seconds_bucket{le="0.02"}'),
        "ticks": count,
        "late": count - value('ilosagg_event_loop_lag_seconds_bucket{le="0.02"}'),
        "busy_late": count - value('ilosagg_event_loop_busy_seconds_bucket{le="0.02"}'),
        "cpu_late": count - value('ilosagg_event_loop_cpu_seconds_bucket{le="0.02"}'),
        "lag_max": value("ilosagg_event_loop_lag_max_seconds "),
        "busy_max": value("ilosagg_event_loop_busy_max_seconds "),
        "cpu_max": value("ilosagg_event_loop_cpu_max_seconds "),
    }


def steal_seconds() -> float:
    """Steal time of every CPU since boot (`/proc/stat`, in USER_HZ ticks of 10 ms)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / 100 if len(fields) > 8 else 0.0


class StealWatch(threading.Thread):
    """When the host took this machine's CPUs: `/proc/stat`'s steal counter, read every 10 ms.

    The kernel counts steal in 10 ms ticks, so this places it to within a tick
    or two: enough to tell whether a long iteration of the service's loop
    coincided with the host running something else. Runs in this process (the
    load generator's), not in the service, whose loop it would otherwise share.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rises: list[tuple[float, float]] = []  # (time.monotonic(), seconds of steal since the last read)
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = steal_seconds()
        while not self._stop_event.wait(0.01):
            now = steal_seconds()
            if now > last:
                self.rises.append((time.monotonic(), now - last))
            last = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def during(self, start: float, seconds: float) -> float:
        """Steal counted from `start` until a read after the interval's end could have seen it."""
        end = start + seconds + 0.02
        return sum(rise for at, rise in self.rises if start <= at <= end)


def iteration_figures(trace: Path, started: float, ended: float, steal: StealWatch) -> dict[str, Any]:
    """The long iterations the light trace kept between `started` and `ended` (time.monotonic())."""
    traced = json.loads(trace.read_text()).get("long_iterations", [])  # none in the full trace
    during = [i for i in traced if "at" in i and started <= i["at"] <= ended]
    over = [i for i in during if i["ms"] - i["run_delay_ms"] > 20]
    return {
        "count": len(during),
        "longest": max(during, key=lambda i: i["ms"] - i["run_delay_ms"], default=None),
        "over_20": len(over),
        "over_20_with_steal": sum(steal.during(i["at"], i["ms"] / 1000) > 0 for i in over),
        "cpu_longest": max(during, key=lambda i: i["cpu_ms"], default=None),
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
        ended = time.monotonic()
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
    after = lag_figures(base)
    probes.sort()
    return {
        "elapsed": ended - started,
        "started": started,
        "ended": ended,
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
        "iteration": after["iteration_max"] * 1000,
        "iteration_before": before["iteration_max"] * 1000,
        "iteration_during": worst_within(before["iteration_buckets"], after["iteration_buckets"]),
        "iteration_late": after["iteration_late"] - before["iteration_late"],
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
    parser.add_argument(
        "--trace",
        metavar="OUT.json",
        help="where the light trace of the loop's long iterations goes (default: a temporary file)",
    )
    args = parser.parse_args()
    trace = Path(args.trace or tempfile.mkstemp(suffix=".json", prefix="soak-trace-")[1])
    os.environ.setdefault("TURNTRACE_LIGHT", "1")  # the service inherits it; "0" for the full trace
    sim, sim_url, keys = start_simulator(1, 2000, 0.02, 0.002)
    extra = "rate_limit = 1000000\n[cache]\nmemory_max_bytes = 67108864\n"
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, sim.pid, 10)
    try:
        service, base = start_service(sim_url, keys, extra=extra, access_log=False, trace=str(trace))
    except BaseException:
        stop(sim)
        raise
    port = int(base.rsplit(":", 1)[1])
    if args.nice:
        os.nice(10)  # this process: the slow clients, the query pool and the prober
    try:
        steal = StealWatch()
        steal.start()
        result = asyncio.run(run(base, port, service.pid, args))
        steal.stop()
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
        f"longest event-loop stall, the loop's CPU in one iteration: {result['iteration']:.1f} ms   "
        f"(target <= 20 ms); before the load began (start-up and the first cold query): "
        f"{result['iteration_before']:.1f} ms; during the load: {result['iteration_during']}; "
        f"iterations over 20 ms during the load: {result['iteration_late']:.0f}"
    )
    print(
        f"longest 50 ms timer lateness while the loop was not waiting for a core: {result['busy']:.1f} ms; "
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
    its = iteration_figures(trace, result["started"], result["ended"], steal)
    longest, busiest = its["longest"], its["cpu_longest"]
    if longest is None or busiest is None:
        print("longest loop iteration during the load: under 15 ms outside select (none traced)")
    else:
        print(
            f"light trace: the most CPU in one iteration {busiest['cpu_ms']:.1f} ms; "
            f"that iteration took {busiest['ms']:.1f} ms outside select, "
            f"{busiest['run_delay_ms']:.1f} ms of it waiting for a core and {busiest['other_ms']:.1f} ms neither"
        )
        print(
            f"longest iteration less its wait for a core: {longest['ms'] - longest['run_delay_ms']:.1f} ms; "
            f"{longest['ms']:.1f} ms in all: CPU {longest['cpu_ms']:.1f} ms, "
            f"waiting for a core {longest['run_delay_ms']:.1f} ms, neither {longest['other_ms']:.1f} ms "
            f"(steal counted during it: {steal.during(longest['at'], longest['ms'] / 1000) * 1000:.0f} ms)"
        )
        print(
            f"  iterations of 15 ms or more outside select: {its['count']}; over 20 ms less their wait "
            f"for a core: {its['over_20']}, of them with steal counted during them: {its['over_20_with_steal']}"
        )
    steal_total = steal.during(result["started"], result["ended"] - result["started"])
    print(f"steal time on this machine's CPUs during the load (/proc/stat): {steal_total:.1f} s")


if __name__ == "__main__":
    main()
