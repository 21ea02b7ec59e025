"""`python -m bench.simserver [options]`: the simulated ilos as a process of its own.

Prints the org keys as one JSON line, then serves until terminated. `GET
/_stats` answers `{"requests": N, "throttled": N}` for the bench to read, and
`POST /_fault?org=ID&fault=timeout` breaks an org while it runs.
What only benchmarks need (uniform catalogs, matching everything, stats)
lives here, not in the package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import signal
from datetime import UTC, datetime

from aiohttp import web

from aggregator.demo.samples import make_video, sample_catalog
from aggregator.demo.simulator import SimOrg, Simulator, SimVideo


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


SAMPLE_TOPICS = ["engineering", "medicine", "hr", "physics", "law", "music", "history", "biology"]


def sample_orgs(count: int, videos_each: int, *, latency: float, metadata_latency: float) -> list[SimOrg]:
    """`count` organisations with the demo's kind of catalog, no duration in their feeds (the worst case)."""
    return [
        SimOrg(
            f"org{i}",
            f"bench-key-{i:02d}-{secrets.token_hex(4)}",
            sample_catalog(SAMPLE_TOPICS[i % len(SAMPLE_TOPICS)], videos_each, seed=i),
            latency=latency,
            metadata_latency=metadata_latency,
        )
        for i in range(count)
    ]


def most_in_window(arrivals: list[float], window: float) -> int:
    """The most requests ilos counted in any rolling window: arrivals in some [t, t + window)."""
    most, start = 0, 0
    for end, at in enumerate(arrivals):
        while arrivals[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def main(args: argparse.Namespace) -> None:
    make = uniform_orgs if args.catalog == "uniform" else sample_orgs
    sim_orgs = make(args.orgs, args.videos, latency=args.latency, metadata_latency=args.metadata_latency)
    for org in sim_orgs:
        org.rate_limit = args.rate_limit
        org.rate_window = args.rate_window
        org.arrival_delay = tuple(args.arrival_delay)
        org.max_results = args.max_results
    sim = EverythingMatches(sim_orgs) if args.catalog == "uniform" else Simulator(sim_orgs)

    async def stats(request: web.Request) -> web.Response:
        calls = {}
        if request.query.get("calls"):  # every search and lookup: (org, endpoint, query or randtag, at)
            calls = {"calls": [(c.org, c.endpoint, c.arg, c.at) for c in sim.log if not c.throttled]}
        return web.json_response(
            {
                **calls,
                "requests": len(sim.log),
                "throttled": len(sim.throttled()),
                "search": len(sim.calls(endpoint="search")),
                "metadata": len(sim.calls(endpoint="metadata")),
                "orgs": {
                    org.name: {
                        "search": len(sim.calls(org.name, "search")),
                        "metadata": len(sim.calls(org.name, "metadata")),
                        "throttled": sum(1 for c in sim.throttled() if c.org == org.name),
                        "most_in_window": most_in_window(org.arrivals, org.rate_window),
                    }
                    for org in sim_orgs
                },
            }
        )

    async def upload(request: web.Request) -> web.Response:
        """`POST /_upload?org=org0&title=...&webhook=<url>`: a new video now, and ilos's webhook."""
        rng = random.Random()
        video = make_video(rng, request.query.get("title", "A new upload"), "new")
        video.published = datetime.now(UTC)
        status = await sim.upload(request.query["org"], video, request.query.get("webhook"))
        return web.json_response({"randtag": video.randtag, "webhook_status": status})

    async def fault(request: web.Request) -> web.Response:
        """`POST /_fault?org=org3&fault=timeout` (an empty fault heals it)."""
        sim.org(request.query["org"]).fault = request.query.get("fault") or None
        return web.json_response({"ok": True})

    sim.app.router.add_get("/_stats", stats)
    sim.app.router.add_post("/_fault", fault)
    sim.app.router.add_post("/_upload", upload)
    await sim.start(port=args.port)
    print(json.dumps([o.api_key for o in sim_orgs]), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await sim.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=8)
    parser.add_argument("--videos", type=int, default=25)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--metadata-latency", type=float, default=0.05)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", choices=("uniform", "sample"), default="uniform")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per window per key, as ilos")
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument(
        "--arrival-delay", type=float, nargs=2, default=(0.0, 0.0), help="seconds to reach ilos: low high"
    )
    parser.add_argument("--max-results", type=int, default=None, help="most videos one answer carries")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
