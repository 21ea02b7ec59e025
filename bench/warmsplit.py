"""Where the warm path's cost lies: our app's own overhead against our handler's.

    python -m bench.warmsplit [--access-log on|off] [--rounds 5]

One process runs the service (in-process, behind the guarded runner, with or
without the access logger) with one more route, `/bare`, a bare handler
returning the cached page's bytes; a `bench.bare` process serves them alone.
wrk measures the three interleaved, and CPU per request is read from the
processes. standalone → in-app bare is what our app costs every request (the
access line and its metrics, the response signal, the guard); in-app bare →
cached page is what our handler and its headers cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

from aiohttp import web

from aggregator.config import parse_config_text
from aggregator.serve.guard import GuardedRunner, limits_for
from aggregator.web.accesslog import AccessLogger
from aggregator.web.app import create_app
from bench.processes import free_port, start_simulator, stop, wait_for
from bench.warm import cpu_seconds


def wrk_cpu(url: str, cpu: Callable[[], float]) -> float:
    """Microseconds of CPU per request (`cpu()` reads the serving process's seconds)."""
    before = cpu()
    out = subprocess.run(
        ["wrk", "-t1", "-c32", "-d3s", url], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"(\d+) requests in", out)
    assert found is not None, out
    requests = int(found.group(1))
    return (cpu() - before) / requests * 1e6


async def measure(sim_url: str, keys: list[str], access_log: bool, rounds: int) -> dict[str, list[float]]:
    port = free_port()
    orgs = "".join(
        f'[[orgs]]\nid = "org{i}"\nname = "Org {i}"\napi_key = "{k}"\n' for i, k in enumerate(keys)
    )
    config = parse_config_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[upstream]\nbase_url = "{sim_url}"\n{orgs}'
    )
    page: dict[str, bytes] = {}

    async def bare(request: web.Request) -> web.Response:
        return web.Response(
            body=page["body"], headers={"Content-Type": "application/atom+xml; charset=utf-8"}
        )

    app = create_app(config)
    app.router.add_get("/bare", bare)
    logging = {"access_log_class": AccessLogger} if access_log else {"access_log": None}
    runner = GuardedRunner(app, limits=limits_for(config), **logging)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/search.atom?q=lecture&count=20"

    def run() -> dict[str, list[float]]:
        for _ in range(2):  # rendered, then served from the page cache
            page["body"] = urllib.request.urlopen(url).read()
        with tempfile.NamedTemporaryFile(suffix=".atom", delete=False) as f:
            f.write(page["body"])
        bare_port = free_port()
        alone = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bare",
                f.name,
                str(bare_port),
                "application/atom+xml; charset=utf-8",
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{bare_port}/search.atom")
            found: dict[str, list[float]] = {"standalone bare": [], "in-app bare": [], "cached page": []}
            for _ in range(rounds):
                found["standalone bare"].append(
                    wrk_cpu(f"http://127.0.0.1:{bare_port}/search.atom", lambda: cpu_seconds(alone.pid))
                )
                found["in-app bare"].append(wrk_cpu(f"http://127.0.0.1:{port}/bare", time.process_time))
                found["cached page"].append(wrk_cpu(url, time.process_time))
            return found
        finally:
            stop(alone)

    try:
        return await asyncio.get_running_loop().run_in_executor(None, run)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--access-log", choices=("on", "off"), default="on")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(3, 25, 0.05, 0.02)
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115  # the access lines go nowhere, as in bench.warm
    try:
        found = asyncio.run(measure(sim_url, keys, args.access_log == "on", args.rounds))
    finally:
        stop(sim)
    medians = {name: statistics.median(values) for name, values in found.items()}
    print(f"access log {args.access_log}; CPU per request, median of {args.rounds} interleaved rounds:")
    for name, us in medians.items():
        print(f"  {name:16} {us:6.1f} us")
    print(f"  in-app bare / standalone: {medians['in-app bare'] / medians['standalone bare']:.2f}")
    print(f"  cached page / in-app bare: {medians['cached page'] / medians['in-app bare']:.2f}")
    print(f"  cached page / standalone: {medians['cached page'] / medians['standalone bare']:.2f}")


if __name__ == "__main__":
    main()
