"""A Sentinel failover under load: how long until the service writes to Redis again? (issue 26)

    python -m bench.failover [--seconds 20] [--rate 20] [--down-after-ms 1000]

Debian's redis-server as a primary, its replica and one Sentinel (quorum 1,
`down-after-milliseconds` as given); one `serve` process with
`redis_url = "redis+sentinel://…"`; the simulated ilos (3 orgs, a 60-a-minute
budget per key that it enforces). Searches at `--rate` a second; the primary is
killed (SIGKILL) a quarter of the way in. Reports the answers by status, the
429s ilos sent, when the Sentinel named the replica primary, and when the
service's `/readyz` said `redis` again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import redis

from bench.processes import free_port, start_redis, start_service, start_simulator, stop


def sentinel(primary: int, down_after_ms: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sentinel-"))
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor aggregator 127.0.0.1 {primary} 1\n"
        f"sentinel down-after-milliseconds aggregator {down_after_ms}\n"
        "sentinel failover-timeout aggregator 5000\n"
    )
    proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    return proc, port


def named_primary(sentinel_port: int) -> int | None:
    try:
        reply = redis.Redis(port=sentinel_port, socket_timeout=0.5).execute_command(
            "SENTINEL", "get-master-addr-by-name", "aggregator"
        )
        return int(reply[1])
    except (redis.RedisError, TypeError):
        return None


async def load(base: str, args: argparse.Namespace, on_kill, sentinel_port: int, replica: int) -> dict:
    statuses: Counter[str] = Counter()
    events: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int) -> None:
            try:
                async with session.get(f"{base}/search.atom", params={"q": f"lecture {n % 200}"}) as resp:
                    await resp.read()
                    statuses[str(resp.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

        async def watch() -> None:
            while "back" not in events:
                await asyncio.sleep(0.05)
                now = time.monotonic()
                if "killed" in events and "elected" not in events and named_primary(sentinel_port) == replica:
                    events["elected"] = now
                if "elected" in events:
                    async with session.get(f"{base}/readyz") as resp:
                        if (await resp.json())["cache"] == "redis":
                            events["back"] = now

        started = time.monotonic()
        watcher = asyncio.create_task(watch())
        tasks, n = [], 0
        while time.monotonic() - started < args.seconds:
            if "killed" not in events and time.monotonic() - started > args.seconds / 4:
                on_kill()
                events["killed"] = time.monotonic()
            tasks.append(asyncio.create_task(one(n)))
            n += 1
            await asyncio.sleep(1 / args.rate)
        await asyncio.gather(*tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, 30)
    return {"statuses": statuses, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--down-after-ms", type=int, default=1000)
    args = parser.parse_args()
    primary, primary_url = start_redis()
    primary_port = int(primary_url.rsplit(":", 1)[1].split("/")[0])
    replica_port = free_port()
    replica = subprocess.Popen(
        ["redis-server", "--port", str(replica_port), "--bind", "127.0.0.1", "--save", "",
         "--replicaof", "127.0.0.1", str(primary_port), "--dir", tempfile.mkdtemp(prefix="bench-replica-")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    watcher, sentinel_port = sentinel(primary_port, args.down_after_ms)
    while named_primary(sentinel_port) != primary_port:
        time.sleep(0.05)
    sim, sim_url, keys = start_simulator(3, 40, 0.05, 0.02, None, "--rate-limit", "60", "--rate-window", "60")
    extra = f'[cache]\nredis_url = "redis+sentinel://127.0.0.1:{sentinel_port}/aggregator/0"\nredis_retry_seconds = 1\n'
    service, base = start_service(sim_url, keys, extra=extra)
    try:
        result = asyncio.run(load(base, args, primary.kill, sentinel_port, replica_port))
        with urllib.request.urlopen(f"{sim_url}/_stats") as resp:
            throttled = json.loads(resp.read())["throttled"]
    finally:
        stop(service, sim, watcher, replica, primary)
    events = result["events"]
    print(f"answers by status: {dict(result['statuses'])}; 429s ilos sent: {throttled}")
    if "elected" in events:
        print(
            f"the Sentinel named the replica primary {events['elected'] - events['killed']:.1f} s after the kill"
        )
    if "back" in events:
        print(f"the service used Redis again {events['back'] - events['killed']:.1f} s after the kill")
    else:
        print("the service did not use Redis again within 30 s")


if __name__ == "__main__":
    main()
