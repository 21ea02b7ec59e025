"""`ilos-aggregator demo`: the real service against the built-in simulated ilos.

The organisations and their keys come from config/demo.toml; the simulator
serves one sample catalog per organisation on a free loopback port, and every
org's base_url is pointed at it. Nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import quote

from aggregator.config import Config
from aggregator.demo.samples import demo_orgs
from aggregator.demo.simulator import Simulator
from aggregator.serve.server import serve_forever

log = logging.getLogger(__name__)


async def run_demo(config: Config) -> int:
    simulator = Simulator(demo_orgs({org.id: org.api_key for org in config.orgs}))
    sim_url = await simulator.start()
    orgs = tuple(dataclasses.replace(org, base_url=sim_url) for org in config.orgs)
    config = dataclasses.replace(
        config, orgs=orgs, upstream=dataclasses.replace(config.upstream, base_url=sim_url)
    )
    base = config.server.public_url

    def announce() -> None:
        q = quote("onboarding")
        print(
            f"\n  Simulated ilos:  {sim_url} ({', '.join(o.name for o in orgs)})\n"
            f"  Search page:     {base}/?q={q}\n"
            f"  Atom feed:       {base}/search.atom?q={q}\n"
            f"  Description:     {base}/opensearch.xml\n\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )

    try:
        await serve_forever(config, ready=announce)
    finally:
        await simulator.stop()
    return 0
