"""Kept feed pages answered before routing give the answer the router gives, and are counted the same.

The service runs as `serve` runs it (the guarded runner with `kept_first` in front
of the app) on a real loopback socket. The same page is asked for at its literal
path, which the front answers, and at an escaped spelling of that path
(`/search%2Eatom`), which only the router understands; the two answers must
not differ but for the date and the request id. The router's handler is wrapped
to count what reaches it, so each test also knows which of the two answered.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aggregator.config import parse_config_text
from aggregator.serve.guard import GuardedRunner, Limits
from aggregator.web.accesslog import AccessLogger
from aggregator.web.app import create_app
from aggregator.web.kept import kept_first
from tests.conftest import config_toml, free_port

TOKEN = "kept-page-client-token-0123456789"
QUERY = "?q=onboarding&count=5"
PER_REQUEST = {"date", "x-request-id"}


@dataclass
class Served:
    base: str
    session: aiohttp.ClientSession
    routed: list[str]  # the raw path of every request that reached the app's router

    async def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        # As written: yarl would otherwise turn the escaped spelling back into the literal path.
        async with self.session.get(URL(self.base + path, encoded=True), headers=headers) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


@pytest.fixture
async def serve(sim, clock) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    runners: list[GuardedRunner] = []
    session = aiohttp.ClientSession(auto_decompress=False)
    write_lines = AccessLogger.write_lines
    AccessLogger.write_lines = False  # counted for /metrics all the same

    async def start(extra: str = "", web_table: str = "", server: dict | None = None) -> Served:
        config = parse_config_text(config_toml(sim, server=server, extra=extra + web_table), environ={})
        routed: list[str] = []

        def front(
            app: web.Application, router: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
        ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
            async def counted(request: web.BaseRequest) -> web.StreamResponse:
                routed.append(request.raw_path)
                return await router(request)

            return kept_first(app, counted)

        runner = GuardedRunner(
            create_app(config, clock=clock, refresh_every=None),
            limits=Limits(),
            front=front,
            access_log_class=AccessLogger,
        )
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return Served(f"http://127.0.0.1:{port}", session, routed)

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()
    AccessLogger.write_lines = write_lines


def same_answer(front: tuple[int, dict[str, str], bytes], router: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = front
    assert (status, body) == (router[0], router[2])
    assert {k: v for k, v in headers.items() if k not in PER_REQUEST} == {
        k: v for k, v in router[1].items() if k not in PER_REQUEST
    }
    assert headers["x-request-id"] and headers["date"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Accept-Encoding": "gzip"},
        {"Accept-Encoding": "gzip;q=0, identity"},
        {"If-None-Match": "ETAG"},
        {"If-None-Match": "ETAG", "Accept-Encoding": "gzip"},
        {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
        {"X-Request-Id": "reader-42"},
        {"Origin": "https://intranet.example"},
    ],
)
@pytest.mark.parametrize("path", ["/search.atom", "/search.rss", "/search.json"])
async def test_a_kept_feed_page_is_the_answer_the_router_gives(serve, path, headers) -> None:
    served = await serve()
    first = await served.get(path + QUERY)  # rendered, by the router
    assert first[0] == 200
    escaped = path.replace(".", "%2E")
    headers = {k: v.replace("ETAG", first[1]["etag"]) for k, v in headers.items()}
    if "gzip" in headers.get("If-None-Match", "") or headers.get("Accept-Encoding") == "gzip":
        gzipped = await served.get(path + QUERY, **{"Accept-Encoding": "gzip"})
        headers = {k: v.replace(first[1]["etag"], gzipped[1]["etag"]) for k, v in headers.items()}
    served.routed.clear()

    from_front = await served.get(path + QUERY, **headers)
    assert served.routed == []  # answered before routing
    from_router = await served.get(escaped + QUERY, **headers)
    assert served.routed == [escaped + QUERY]

    same_answer(from_front, from_router)
    assert from_front[0] == (304 if "If-None-Match" in headers or "If-Modified-Since" in headers else 200)
    assert from_front[1]["access-control-allow-origin"] == "*"
    if "X-Request-Id" in headers:
        assert from_front[1]["x-request-id"] == "reader-42"


async def test_a_client_s_kept_page_is_its_own_and_private(serve) -> None:
    served = await serve(
        extra=f'[[clients]]\nname = "reader"\ntoken = "{TOKEN}"\n',
        server={"signing_secret": "a-signing-secret-for-tests-0123"},
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await served.get("/search.atom" + QUERY, **bearer))[0] == 200
    served.routed.clear()

    from_front = await served.get("/search.atom" + QUERY, **bearer)
    from_router = await served.get("/search%2Eatom" + QUERY, **bearer)
    assert served.routed == ["/search%2Eatom" + QUERY]
    same_answer(from_front, from_router)
    assert from_front[1]["cache-control"].startswith("private")

    # Without the token the kept page is not given out: the router says 401.
    refused = await served.get("/search.atom" + QUERY)
    assert refused[0] == 401
    assert served.routed[-1] == "/search.atom" + QUERY


async def test_an_origin_list_is_answered_per_origin(serve) -> None:
    served = await serve(web_table='[web]\ncors_origins = ["https://intranet.example"]\n')
    await served.get("/search.atom" + QUERY)
    for origin in ("https://intranet.example", "https://elsewhere.example"):
        from_front = await served.get("/search.atom" + QUERY, Origin=origin)
        from_router = await served.get("/search%2Eatom" + QUERY, Origin=origin)
        same_answer(from_front, from_router)
        assert from_front[1]["vary"] == "Accept-Encoding, Origin"
    assert from_front[1].get("access-control-allow-origin") is None
    assert served.routed == ["/search.atom" + QUERY, "/search%2Eatom" + QUERY, "/search%2Eatom" + QUERY]


async def test_requests_answered_before_routing_are_counted(serve) -> None:
    served = await serve()
    for _ in range(4):
        await served.get("/search.json" + QUERY)
    assert served.routed == ["/search.json" + QUERY]
    _, _, text = await served.get("/metrics")
    counted = re.search(
        rb'^ilosagg_requests_total\{format="json",route="/search.json",status="200"\} (\S+)$', text, re.M
    )
    assert counted is not None and float(counted.group(1)) == 4
    reused = re.search(rb'^ilosagg_pages_total\{format="json",source="reused"\} (\S+)$', text, re.M)
    assert reused is not None and float(reused.group(1)) == 3
    timed = re.search(rb'^ilosagg_request_seconds_count\{route="/search.json"\} (\S+)$', text, re.M)
    assert timed is not None and float(timed.group(1)) == 4


async def test_callers_over_their_limit_are_refused_in_their_format(serve) -> None:
    """Each request is counted once against the caller's limit, whichever of the two answers it."""
    served = await serve(server={"anonymous_rate_limit": 3})
    answers = [await served.get("/search.json" + QUERY) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    assert served.routed == ["/search.json" + QUERY]  # only the first, which rendered the page
    _, headers, body = answers[-1]
    assert headers["content-type"].startswith("application/json") and b"retry_after" in body
    assert headers["cache-control"] == "no-store" and int(headers["retry-after"]) > 0
    assert headers["access-control-allow-origin"] == "*" and headers["x-request-id"]


async def test_what_is_not_a_kept_feed_page_takes_the_route(serve) -> None:
    served = await serve()
    await served.get("/search.atom" + QUERY)
    for path in (
        "/search.atom?q=onboarding&count=6",  # not rendered yet
        "/search.atom?q=onboarding&count=0",  # a 400
        "/?q=onboarding",  # the HTML page has its own handler
        "/opensearch.xml",
    ):
        await served.get(path)
        assert served.routed[-1] == path
    head = await served.session.head(served.base + "/search.atom" + QUERY)
    assert head.status == 200 and served.routed[-1] == "/search.atom" + QUERY
