"""`python -m bench.simserver ORGS VIDEOS LATENCY METADATA_LATENCY PORT`: a simulator process.

Prints the org keys as one JSON line, then serves until terminated. Every
video of every org matches any query, so each new query is a full cold search.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aggregator.simulator import Simulator, uniform_orgs


async def main(orgs: int, videos: int, latency: float, metadata_latency: float, port: int) -> None:
    sim_orgs = uniform_orgs(orgs, videos, latency=latency, metadata_latency=metadata_latency)
    for org in sim_orgs:
        org.match_everything = True
    sim = Simulator(sim_orgs)
    await sim.start(port=port)
    print(json.dumps([o.api_key for o in sim_orgs]), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sim.stop()


if __name__ == "__main__":
    o, v, lat, mlat, port = sys.argv[1:6]
    asyncio.run(main(int(o), int(v), float(lat), float(mlat), int(port)))
