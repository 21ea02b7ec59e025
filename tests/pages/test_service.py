"""Rendered pages (pages.service): what their shared first-seen records keep, and for how long."""

from __future__ import annotations

import redis

from aggregator.store.keys import NAMESPACE


async def test_a_pages_first_seen_record_lives_no_longer_than_its_answers(
    redis_client_app, redis_clean
) -> None:
    """The record says when someone in the caller's scope first fetched a page; kept 30 days, it
    outlived every answer it described. Now it lives at most `cache.stale_ttl`."""
    client = await redis_client_app(stale_ttl=3600)
    assert (await client.get("/search.atom", params={"q": "onboarding"})).status == 200
    direct = redis.Redis.from_url(redis_clean)
    records = direct.keys(f"{NAMESPACE}:page:*")
    assert records
    assert all(0 < direct.pttl(k) <= 3600 * 1000 for k in records)
