"""Instructions per warm request, counted by callgrind: the same from run to run on a noisy host.

    python -m bench.warmcount [--seconds 10]

Three servers run in turn under `valgrind --tool=callgrind` (Debian's valgrind):
the bare handler (`bench.bare`), the floor (`bench.bare ... floor`: our page's
headers and our access line, nothing else) and the service with a cached
20-entry Atom page. Each is warmed, its counters zeroed, left idle for
`--seconds` (what its timers cost alone), zeroed again, then loaded by wrk
(`-t1 -c8`) for `--seconds`. The idle count is taken off the loaded one, and the
rest divided by the requests wrk completed.

Callgrind counts user-space instructions: system calls and cache misses are not
in it, so these figures rank the work each server does, not its time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bare import cached_page
from bench.processes import free_port, service_config, start_simulator, stop, wait_for

ATOM = "application/atom+xml; charset=utf-8"
QUERY = "/search.atom?q=lecture&count=20"


def summary(path: str) -> int:
    """A callgrind dump's total instruction count."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no total in {path}")


def counted(command: list[str], url: str, seconds: int, cwd: str, warm: str | None = None) -> float:
    """Instructions per request of the server `command` starts, answering `url`."""
    out = tempfile.mkdtemp(prefix="warmcount-") + "/cg"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(warm or url, timeout=240)
        for _ in range(3):
            urllib.request.urlopen(url, timeout=120).read()
        subprocess.run(["wrk", "-t1", "-c8", "-d3s", url], capture_output=True, check=True)
        control = ["callgrind_control"]
        subprocess.run([*control, "-z", str(proc.pid)], capture_output=True, check=True)
        time.sleep(seconds)
        subprocess.run([*control, "-d", str(proc.pid)], capture_output=True, check=True)
        found = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True, text=True, check=True
        ).stdout
        subprocess.run([*control, "-d", str(proc.pid)], capture_output=True, check=True)
        requests = re.search(r"(\d+) requests in", found)
        assert requests is not None, found
    finally:
        stop(proc)
    idle, loaded = sorted(glob.glob(out + ".*"), key=os.path.getmtime)[:2]
    return (summary(loaded) - summary(idle)) / int(requests.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    sim, sim_url, keys = start_simulator(3, 25, 0.0, 0.0)
    try:
        port = free_port()
        config = service_config(sim_url, keys, port=port, timeout=60)
        url = f"http://127.0.0.1:{port}{QUERY}"
        service = [sys.executable, "-m", "aggregator", "serve", "--config", str(config)]
        ours = counted(service, url, args.seconds, root, warm=f"http://127.0.0.1:{port}/healthz")
        # The page and its headers as the service sent them, for the bare handler and the floor.
        plain = subprocess.Popen(service, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz")
            body, headers = cached_page(url)
        finally:
            stop(plain)
        with tempfile.NamedTemporaryFile(suffix=".atom", delete=False) as page:
            page.write(body)
        bare_port, floor_port = free_port(), free_port()
        bare = [sys.executable, "-m", "bench.bare", page.name, str(bare_port), ATOM]
        floor = [
            sys.executable,
            "-m",
            "bench.bare",
            page.name,
            str(floor_port),
            "-",
            "floor",
            json.dumps(headers),
        ]
        figures = {
            "bare aiohttp handler": counted(bare, f"http://127.0.0.1:{bare_port}{QUERY}", args.seconds, root),
            "floor: our headers and line": counted(
                floor, f"http://127.0.0.1:{floor_port}{QUERY}", args.seconds, root
            ),
            "cached page (200)": ours,
        }
    finally:
        stop(sim)
    base = figures["bare aiohttp handler"]
    for name, instructions in figures.items():
        print(f"{name:30} {instructions:10,.0f} instructions per request   {instructions / base:.2f} x bare")


if __name__ == "__main__":
    main()
