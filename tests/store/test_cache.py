"""Caching with a real Redis: repeat and concurrent requests are nearly free, faults are survived."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import redis
from redis.asyncio.connection import Connection

from aggregator.store.held import PREFIX as BUDGET_PREFIX
from aggregator.store.keys import NAMESPACE
from aggregator.store.memory import MemoryCache
from aggregator.store.redis_cache import redis_failed
from aggregator.web.app import create_app
from tests.conftest import KEYS, make_config
from tests.helpers import NS, assert_valid_atom, entry_ids, timing

ROOT = Path(__file__).resolve().parents[2]


async def test_redis_outage_and_return(aiohttp_client, sim, redis_process, clock) -> None:
    config = make_config(sim, cache={"redis_url": redis_process.url, "redis_retry_seconds": 5})
    client = await aiohttp_client(create_app(config, clock=clock))
    assert (await client.get("/search.atom", params={"q": "onboarding"})).status == 200
    assert (await (await client.get("/readyz")).json())["cache"] == "redis"
    redis_process.stop()
    down = await client.get("/search.atom", params={"q": "lecture"})
    assert down.status == 200 and entry_ids(assert_valid_atom(await down.read()))
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded" and "Redis unreachable" in ready["cache"]
    again = await client.get("/search.atom", params={"q": "lecture", "count": "3"})
    assert set(timing(again).values()) == {"cached"}  # the in-process cache took over
    redis_process.start()  # same port, empty
    clock.advance(6)  # past redis_retry_seconds: the next request tries Redis again
    back = await client.get("/search.atom", params={"q": "safety"})
    assert back.status == 200
    assert (await (await client.get("/readyz")).json())["cache"] == "redis"
    keys = redis.Redis.from_url(redis_process.url).keys(f"{NAMESPACE}:answer:*")
    assert len(keys) == 3  # the answers to "safety", written to Redis again


async def test_a_full_redis_is_not_a_redis_down(aiohttp_client, sim, redis_process, clock, caplog) -> None:
    """Redis at maxmemory (noeviction) refuses writes: the service keeps reading from it, logs one
    line, and /metrics counts the refusals. Before, it took Redis for down and flapped."""
    config = make_config(sim, cache={"redis_url": redis_process.url})
    client = await aiohttp_client(create_app(config, clock=clock))
    assert set(timing(await client.get("/search.atom", params={"q": "onboarding"})).values()) == {"ok"}
    direct = redis.Redis.from_url(redis_process.url)
    direct.config_set("maxmemory", 1)  # full: every write is refused from now on
    try:
        for q in ("payroll", "safety", "welcome"):
            assert (await client.get("/search.atom", params={"q": q})).status == 200
        cached = await client.get("/search.atom", params={"q": "onboarding", "count": "3"})
        assert set(timing(cached).values()) == {"cached"}  # read from Redis
        assert (await (await client.get("/readyz")).json())["cache"] == "redis"
        metrics = await (await client.get("/metrics")).text()
        refused = next(
            line for line in metrics.splitlines() if line.startswith("ilosagg_redis_full_refusals ")
        )
        assert float(refused.split()[1]) > 0
        full_lines = [r for r in caplog.records if "Redis is full" in r.getMessage()]
        assert len(full_lines) == 1  # one line a minute, whatever the number of refusals
        assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    finally:
        direct.config_set("maxmemory", 0)


async def test_cache_holds_no_secrets_and_every_key_expires(redis_client_app, sim, redis_clean) -> None:
    client = await redis_client_app()
    await client.get("/search.atom", params={"q": "onboarding"})
    r = redis.Redis.from_url(redis_clean)
    keys = r.keys("*")
    # The cache's records under its namespace; the budget's windows under their own fixed prefix.
    assert keys and all(k.startswith((NAMESPACE.encode() + b":", BUDGET_PREFIX.encode())) for k in keys)
    assert any(k.startswith(BUDGET_PREFIX.encode()) for k in keys)
    for k in keys:
        assert r.pttl(k) > 0
        kind = r.type(k)
        if kind == b"list":  # the budget's moving window: timestamps
            blob = k + b"".join(r.lrange(k, 0, -1))
        elif kind == b"zset":  # deferred duration lookups: randtags; budget windows: unit ids
            blob = k + b"".join(r.zrange(k, 0, -1))
        elif kind == b"hash":  # counters: how often each query digest was asked, term statistics
            blob = k + b"".join(a + b for a, b in r.hgetall(k).items())
        else:
            blob = k + (r.get(k) or b"")
        assert not any(key.encode() in blob for key in KEYS.values())
        assert b"onboarding" not in k  # user text is digested, never a raw key


def test_memory_backend_is_bounded_in_bytes_and_least_recently_used_goes_first() -> None:
    now = [0.0]
    cache = MemoryCache(max_bytes=100_000, clock=lambda: now[0])
    for i in range(200):
        cache.set_now(f"k{i}", b"v" * 1000, ttl=100)  # about 1.2 kB each with the key and overhead
        if i >= 1:
            cache.get_now("k0")  # keep k0 in use
    assert cache.bytes <= 100_000 and 70 <= len(cache) <= 90
    assert cache.get_now("k0") == b"v" * 1000 and cache.get_now("k1") is None and cache.get_now("k199")
    cache.set_now("huge", b"x" * 200_000, ttl=100)  # larger than the whole bound: not kept
    assert cache.get_now("huge") is None and cache.get_now("k199")
    now[0] = 101
    assert cache.get_now("k199") is None


async def test_etag_and_last_modified_give_304s(client) -> None:
    resp = await client.get("/search.atom", params={"q": "onboarding"})
    etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    cache_control = resp.headers["Cache-Control"]
    assert cache_control.startswith("public, max-age=") and int(cache_control.rsplit("=", 1)[1]) > 250
    assert "Accept-Encoding" in resp.headers["Vary"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-Modified-Since": modified},
        {"If-None-Match": "*"},
    ):
        again = await client.get("/search.atom", params={"q": "onboarding"}, headers=headers)
        assert again.status == 304, headers
        assert await again.read() == b""
        assert again.headers["ETag"] == etag and again.headers["Last-Modified"] == modified
        assert again.headers["Cache-Control"].startswith("public, max-age=")
    # If-None-Match takes precedence over If-Modified-Since (RFC 9110 13.2.2).
    changed = await client.get(
        "/search.atom",
        params={"q": "onboarding"},
        headers={"If-None-Match": '"old"', "If-Modified-Since": modified},
    )
    assert changed.status == 200
    older = await client.get(
        "/search.atom",
        params={"q": "onboarding"},
        headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert older.status == 200


async def test_compression_and_errors_not_stored(client) -> None:
    resp = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert resp.headers["Content-Encoding"] == "gzip"
    plain = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Accept-Encoding": "identity"}
    )
    assert "Content-Encoding" not in plain.headers
    import gzip

    assert gzip.decompress(await resp.read()) == await plain.read()
    # Each content coding has its own strong validator (RFC 9110 8.8.3), and each gets its 304.
    assert resp.headers["ETag"] == plain.headers["ETag"][:-1] + '-gzip"'
    for etag, coding in ((resp.headers["ETag"], "gzip"), (plain.headers["ETag"], "identity")):
        again = await client.get(
            "/search.atom",
            params={"q": "onboarding"},
            headers={"Accept-Encoding": coding, "If-None-Match": etag},
        )
        assert again.status == 304 and again.headers["ETag"] == etag
    crossed = await client.get(
        "/search.atom",
        params={"q": "onboarding"},
        headers={"Accept-Encoding": "identity", "If-None-Match": resp.headers["ETag"]},
    )
    assert crossed.status == 200
    bad = await client.get("/search.atom", params={"q": "a", "count": "0"})
    assert bad.status == 400 and bad.headers["Cache-Control"] == "no-store"
    missing = await client.get("/nowhere")
    assert missing.status == 404 and missing.headers["Cache-Control"] == "no-store"


async def test_rate_limit_cooldown_is_shared_through_redis(redis_client_app, sim) -> None:
    one = await redis_client_app()
    sim.org("hr").fault = "429"
    await one.get("/search.atom", params={"q": "benefits"})
    two = await redis_client_app()
    resp = await two.get("/search.atom", params={"q": "payroll"})
    assert timing(resp)["hr"] == "skipped"
    assert len(sim.calls("hr", "search")) == 1


@pytest.mark.parametrize(
    "accept_encoding, gzipped",
    [
        ("gzip", True),
        ("gzip;q=0.5, identity", True),
        ("*", True),
        ("*;q=1, gzip;q=0", False),  # gzip refused by name, whatever * says
        ("gzip;q=0.000", False),
        ("identity", False),
        ("br;q=1, *;q=0", False),
        ("x-gzip", True),
        ("gzip;q=abc", False),  # a q-value that is not one counts as 0
        ("GZIP; Q=0.3", True),
    ],
)
async def test_gzip_only_where_accept_encoding_allows_it(client, accept_encoding, gzipped) -> None:
    resp = await client.get(
        "/search.atom",
        params={"q": "onboarding"},
        headers={"Accept-Encoding": accept_encoding},
        auto_decompress=False,
    )
    assert resp.status == 200
    assert (resp.headers.get("Content-Encoding") == "gzip") is gzipped


def test_a_status_read_back_from_a_shared_store_is_checked() -> None:
    from aggregator.model import OrgStatus

    assert OrgStatus.parse(b"timeout") is OrgStatus.TIMEOUT
    assert OrgStatus.parse(b"ok") is OrgStatus.OK
    assert OrgStatus.parse(b"\xff garbage") is OrgStatus.ERROR
    assert OrgStatus.parse("") is OrgStatus.ERROR


async def test_last_modified_is_when_the_representation_first_appeared(redis_client_app, sim, clock) -> None:
    # Newest first: a relevance order may move when the term statistics' next snapshot is taken,
    # which is a change of representation like any other (search.termstats).
    client = await redis_client_app()
    since = {"If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"}
    # Never fetched before: not "unchanged since 2026", whatever its newest entry's date.
    first = await client.get("/search.atom", params={"q": "safety", "sort": "date"}, headers=since)
    assert first.status == 200
    page_two = await client.get(
        "/search.atom", params={"q": "onboarding", "count": "3", "startIndex": "4"}, headers=since
    )
    assert page_two.status == 200
    modified = first.headers["Last-Modified"]
    assert parsedate_to_datetime(modified).timestamp() == int(clock())
    clock.advance(400)  # past search_ttl: fetched again, the same bytes
    again = await client.get("/search.atom", params={"q": "safety", "sort": "date"})
    assert again.headers["ETag"] == first.headers["ETag"] and again.headers["Last-Modified"] == modified
    assert (
        await client.get(
            "/search.atom", params={"q": "safety", "sort": "date"}, headers={"If-Modified-Since": modified}
        )
    ).status == 304
    # Shared through Redis: another replica says the same.
    other = await redis_client_app()
    clock.advance(400)
    there = await other.get("/search.atom", params={"q": "safety", "sort": "date"})
    assert there.headers["Last-Modified"] == modified


async def test_an_empty_result_is_dated_by_when_it_appeared(redis_client_app, clock) -> None:
    client = await redis_client_app()
    resp = await client.get("/search.atom", params={"q": "zzzz nothing matches"})
    doc = assert_valid_atom(await resp.read())
    assert doc.findall("a:entry", NS) == []
    updated = doc.findtext("a:updated", namespaces=NS)
    assert not updated.startswith("1970") and not resp.headers["Last-Modified"].endswith("1970 00:00:00 GMT")
    rss = await (await client.get("/search.rss", params={"q": "zzzz nothing matches"})).text()
    assert "1970" not in rss
    clock.advance(400)  # fetched again later: still the same bytes, ETag and date
    later = await client.get(
        "/search.atom", params={"q": "zzzz nothing matches"}, headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert later.status == 304 and later.headers["Last-Modified"] == resp.headers["Last-Modified"]


async def test_a_connection_closed_under_a_command_is_redis_failing_not_a_bug() -> None:
    """redis-py raises AttributeError, not ConnectionError, when a command meets a connection
    closed under it (redis/redis-py#4287; a cluster losing a node does it): the cache and the
    limiter take that for Redis failing and fall back to memory (the cluster test in
    test_redis_kinds sees it happen now and then). The same error from our own code is a bug."""
    closed = Connection()  # never connected: its writer is None, as after the race
    with pytest.raises(AttributeError) as raced:
        await closed._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    assert redis_failed(raced.value)

    with pytest.raises(AttributeError) as ours:
        MemoryCache().no_such_thing  # noqa: B018
    assert not redis_failed(ours.value)


async def test_an_exhausted_pool_is_waited_on_and_a_second_replica_finds_every_answer(
    aiohttp_client, sim, redis_clean, clock
) -> None:
    """Pool pressure is not an outage. With 8 connections and every lookup of several searches
    starting at once, commands found no free connection; that was taken for Redis being down,
    answers landed in memory only, and a second replica on the same Redis missed them (or found
    an orphaned lock and waited out the deadline, reporting the org `timeout`)."""
    for org in sim.orgs:
        org.duration_child = None  # every duration is a lookup
        org.feed_format = "rss"
    config = make_config(
        sim,
        cache={"redis_url": redis_clean, "redis_pool_size": 8},
        upstream={"rate_limit": 100_000, "timeout": 2.0, "deadline": 4.0},
    )
    one = await aiohttp_client(create_app(config, clock=clock))
    queries = ["lecture", "onboarding", "safety", "analysis"]
    first = await asyncio.gather(*(one.get("/search.atom", params={"q": q, "count": "100"}) for q in queries))
    assert {r.status for r in first} == {200}
    assert all(set(timing(r).values()) == {"ok"} for r in first)
    two = await aiohttp_client(create_app(config, clock=clock))
    for q in queries:
        again = await two.get("/search.json", params={"q": q, "count": "100"})
        assert set(timing(again).values()) == {"cached"}, q
    assert "Redis unreachable" not in (await (await one.get("/readyz")).text())
