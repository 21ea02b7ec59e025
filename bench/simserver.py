"""`python -m bench.simserver ORGS VIDEOS LATENCY METADATA_LATENCY PORT`: a simulator process.

Prints the org keys as one JSON line, then serves until terminated. Every
video of every org matches any query, so each new query is a full cold search.
What only benchmarks need (uniform catalogs, matching everything) lives here,
not in the package.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import sys

from aggregator.samples import make_video
from aggregator.simulator import SimOrg, Simulator, SimVideo


class EverythingMatches(Simulator):
    """Every video answers every query: each new query costs a whole catalog."""

    def matches(self, org: SimOrg, query: str) -> list[SimVideo]:
        return list(org.videos)


def uniform_orgs(count: int, videos_each: int, *, latency: float, metadata_latency: float) -> list[SimOrg]:
    """`count` organisations of `videos_each` videos, with no duration in their feeds."""
    orgs = []
    for i in range(count):
        rng = random.Random(f"bench:{i}")
        videos = [make_video(rng, f"Lecture {n + 1}: topic {i}-{n}", f"org {i}") for n in range(videos_each)]
        orgs.append(
            SimOrg(
                f"org{i}",
                f"bench-key-{i:02d}-{secrets.token_hex(4)}",
                videos,
                latency=latency,
                metadata_latency=metadata_latency,
            )
        )
    return orgs


async def main(orgs: int, videos: int, latency: float, metadata_latency: float, port: int) -> None:
    sim_orgs = uniform_orgs(orgs, videos, latency=latency, metadata_latency=metadata_latency)
    sim = EverythingMatches(sim_orgs)
    await sim.start(port=port)
    print(json.dumps([o.api_key for o in sim_orgs]), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sim.stop()


if __name__ == "__main__":
    o, v, lat, mlat, port = sys.argv[1:6]
    asyncio.run(main(int(o), int(v), float(lat), float(mlat), int(port)))
