"""The upstream client against the simulated ilos: every call ends in one typed outcome."""

from __future__ import annotations

import dataclasses
from datetime import UTC

import pytest
from aiohttp import web

from aggregator.config import UpstreamConfig
from aggregator.ilos.client import (
    Outcome,
    fetch_duration,
    fetch_search,
    new_session,
    parse_metadata_answer,
    parse_retry_after,
)
from tests.conftest import make_config


@pytest.fixture
async def session():
    s = new_session()
    yield s
    await s.close()


async def test_search_ok_sends_the_org_key_and_a_user_agent(sim, session) -> None:
    config = make_config(sim)
    fetched = await fetch_search(session, config.orgs[0], "onboarding", config.upstream)
    assert fetched.outcome is Outcome.OK and b"<rss" in fetched.body
    assert sim.calls("engineering", "search")[-1].arg == "onboarding"


@pytest.mark.parametrize(
    "fault, outcome, status",
    [
        ("500", Outcome.HTTP_ERROR, 500),
        ("503", Outcome.HTTP_ERROR, 503),
        ("401", Outcome.DENIED, 401),
        ("429", Outcome.RATE_LIMITED, 429),
        ("oversized", Outcome.TOO_LARGE, 200),
    ],
)
async def test_faults_become_outcomes(sim, session, fault, outcome, status) -> None:
    config = make_config(sim)
    sim.org("engineering").fault = fault
    fetched = await fetch_search(session, config.orgs[0], "x", config.upstream)
    assert (fetched.outcome, fetched.status) == (outcome, status)
    assert config.orgs[0].api_key not in fetched.detail
    if fault == "429":
        assert fetched.retry_after == 30.0


async def test_timeout_is_per_request(sim, session) -> None:
    """The simulated org would answer after 120 s; a 0.3 s timeout makes it a TIMEOUT outcome."""
    config = make_config(sim)
    upstream = dataclasses.replace(config.upstream, timeout=0.3)
    sim.org("engineering").fault = "timeout"
    fetched = await fetch_search(session, config.orgs[0], "x", upstream)
    assert fetched.outcome is Outcome.TIMEOUT
    assert fetched.detail == "no answer within 0.3s"


async def test_body_cap_is_enforced_while_reading(sim, session) -> None:
    config = make_config(sim)
    upstream = dataclasses.replace(config.upstream, max_body_bytes=2048)
    fetched = await fetch_search(session, config.orgs[0], "onboarding", upstream)
    assert fetched.outcome is Outcome.TOO_LARGE


async def test_refused_connection_is_a_network_outcome(session) -> None:
    from aggregator.config import Org

    org = Org("x", "X", "k-secret-value", "http://127.0.0.1:9")
    fetched = await fetch_search(session, org, "q", UpstreamConfig())
    assert fetched.outcome is Outcome.NETWORK and "k-secret-value" not in fetched.detail


async def test_redirects_are_not_followed_so_keys_stay_home(aiohttp_server, session) -> None:
    """A 307 would re-send the POSTed key to wherever it points."""
    seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(await request.text())
        return web.json_response({"level": "success", "data": {"totalMs": 1}})

    other = web.Application()
    other.router.add_post("/steal", elsewhere)
    thief = await aiohttp_server(other)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(thief.make_url("/steal")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    server = await aiohttp_server(app)
    from aggregator.config import Org

    org = Org("x", "X", "the-org-key", str(server.make_url("")).rstrip("/"))
    answer = await fetch_duration(session, org, "GqF8CpMD3Huk", UpstreamConfig())
    fetched = await fetch_search(session, org, "q", UpstreamConfig())
    assert answer.outcome is Outcome.HTTP_ERROR and fetched.outcome is Outcome.HTTP_ERROR
    assert seen == []


async def test_duration_lookups_on_both_metadata_paths(sim, session) -> None:
    config = make_config(sim)
    video = sim.org("medicine").videos[0]
    for path in ("/video/metadata", "/v1/video/metadata"):
        upstream = dataclasses.replace(config.upstream, metadata_path=path)
        answer = await fetch_duration(session, config.orgs[1], video.randtag, upstream)
        assert (answer.outcome, answer.duration_ms) == (Outcome.OK, video.duration_ms)
    unknown = await fetch_duration(session, config.orgs[1], "NoSuchVideo1", config.upstream)
    assert (unknown.outcome, unknown.duration_ms) == (Outcome.UNPARSEABLE, None)


def test_metadata_envelope_variants() -> None:
    ok = b'{"message":"","level":"success","data":{"hours":"00","mins":"15","secs":"10","ms":"380","totalMs":910380}}'
    assert parse_metadata_answer(ok) == (910380, "")
    strings_only = b'{"level":"success","data":{"hours":"01","mins":"00","secs":"01","ms":"5"}}'
    assert parse_metadata_answer(strings_only)[0] == 3_601_005
    for bad in (
        b"<html>",
        b"[]",
        b'{"level":"error","message":"Video not found","data":[]}',
        b'{"level":"success","data":{"totalMs":"soon"}}',
        b'{"level":"success","data":{"totalMs":-5}}',
    ):
        assert parse_metadata_answer(bad)[0] is None


def test_retry_after_forms() -> None:
    from datetime import datetime

    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Mon, 01 Jan 2024 00:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
