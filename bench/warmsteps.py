"""What each step of serving a cached page costs, in microseconds of CPU, measured in-process.

    python -m bench.warmsteps [--loops 20000]

The service runs in this process against a simulator process; the page is
fetched once over HTTP to fill the page cache, and then each step the warm
path takes is timed alone on a request built the way aiohttp builds one
(`make_mocked_request`): routing (which a kept page no longer takes), the
caller check, the page lookup, the poll tally, choosing the coding and checking
the validators, the 200 (or the 304) from the reuse headers with its request
id, the request metrics and the access line (written to /dev/null), and a kept
page's whole answer before routing (`web.kept`). What is left of `bench.warm`'s CPU per request is aiohttp's own:
reading and parsing the request, writing the response. Medians of 5 timings of
`--loops` calls each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from aggregator.config import parse_config_text
from aggregator.metrics import METRICS
from aggregator.render.formats import ATOM
from aggregator.web import accesslog, httpcache, signals
from aggregator.web.app import create_app
from aggregator.web.kept import kept_first
from aggregator.web.search import raw_page_key
from aggregator.web.state import CORS_POLICY, SERVICES
from bench.processes import free_port, start_simulator, stop

PATH = "/search.atom?q=lecture&count=20"


def timed(fn: Callable[[], object], loops: int) -> float:
    """Median microseconds per call of `fn`, over 5 timings of `loops` calls."""
    runs = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(loops):
            fn()
        runs.append((time.thread_time() - started) / loops * 1e6)
    return statistics.median(runs)


async def timed_async(fn: Callable[[], Awaitable[object]], loops: int) -> float:
    runs = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(loops):
            await fn()
        runs.append((time.thread_time() - started) / loops * 1e6)
    return statistics.median(runs)


async def measure(sim_url: str, keys: list[str], loops: int) -> list[tuple[str, float]]:
    port = free_port()
    orgs = "".join(
        f'[[orgs]]\nid = "org{i}"\nname = "Org {i}"\napi_key = "{k}"\n' for i, k in enumerate(keys)
    )
    config = parse_config_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nparse_workers = 1\n'
        f'[upstream]\nbase_url = "{sim_url}"\n{orgs}'
    )
    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=accesslog.AccessLogger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # rendered, then served from the page cache
                async with session.get(f"http://127.0.0.1:{port}{PATH}") as resp:
                    etag = resp.headers["ETag"]
                    await resp.read()
        services = app[SERVICES]
        request = make_mocked_request("GET", PATH, headers={"Host": "127.0.0.1"}, app=app)
        match = await app.router.resolve(request)
        request = make_mocked_request("GET", PATH, headers={"Host": "127.0.0.1"}, app=app, match_info=match)
        conditional = make_mocked_request(
            "GET", PATH, headers={"Host": "127.0.0.1", "If-None-Match": etag}, app=app, match_info=match
        )
        caller = services.auth.caller(request)
        assert caller is not None
        raw_key = raw_page_key(ATOM, request.raw_path, caller)
        page = services.pages.kept(raw_key)
        assert page is not None, "the page was not cached"
        now = time.time()
        any_origin = app[CORS_POLICY].headers({})
        services.subscriptions.polled(raw_key, ATOM.name, request.raw_path, caller)  # the URL's first poll
        route = app[METRICS].route(ATOM.path)

        def reuse(request: web.Request) -> web.Response:
            """The front's answer to a public reuse: `respond`, then CORS and the request id."""
            response = httpcache.respond(request, page, private=False, hit=True, now=now)
            response.headers.extend(any_origin)
            response.headers[signals.X_REQUEST_ID] = signals.request_id(request.headers)
            return response

        response = reuse(request)
        steps = [
            ("routing (the app's router)", await timed_async(lambda: app.router.resolve(request), loops)),
            ("caller check", timed(lambda: services.auth.caller(request), loops)),
            (
                "page lookup",
                timed(lambda: services.pages.kept(raw_page_key(ATOM, request.raw_path, caller)), loops),
            ),
            (
                "poll tally (a repeat poll)",
                timed(lambda: services.subscriptions.polled_again(raw_key), loops),
            ),
            ("coding and validators", timed(lambda: httpcache.representation(request.headers, page), loops)),
            ("the 200: respond, CORS, request id", timed(lambda: reuse(request), loops)),
            ("the 304: respond, CORS, request id", timed(lambda: reuse(conditional), loops)),
            ("request metrics", timed(lambda: route.observe(200, 0.001), loops)),
        ]
        logger = accesslog.AccessLogger(None, "")  # type: ignore[arg-type]  # no logging.Logger: it writes itself
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            sys.stderr = devnull
            steps.append(
                ("access line (and its metrics)", timed(lambda: logger.log(request, response, 0.001), loops))
            )
            accesslog.flush()

        async def routed(request: web.BaseRequest) -> web.StreamResponse:
            raise AssertionError("the kept page was not answered before routing")

        front = kept_first(app, routed)
        unrouted = make_mocked_request("GET", PATH, headers={"Host": "127.0.0.1"}, app=app)
        steps.append(
            (
                "a kept 200 before routing, all but the access line",
                await timed_async(lambda: front(unrouted), loops),
            )
        )
        return steps
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=20000)
    args = parser.parse_args()
    sim, sim_url, keys = start_simulator(3, 25, 0.0, 0.0)
    try:
        steps = asyncio.run(measure(sim_url, keys, args.loops))
    finally:
        stop(sim)
    for name, us in steps:
        print(f"{name:48} {us:6.2f} us")
    # A kept 200 as served: answered before routing (its steps above, together), then its access line.
    found = dict(steps)
    summed = (
        found["a kept 200 before routing, all but the access line"] + found["access line (and its metrics)"]
    )
    print(f"{'a kept 200, all of ours':48} {summed:6.2f} us")


if __name__ == "__main__":
    main()
