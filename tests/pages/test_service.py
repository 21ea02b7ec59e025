"""Rendered pages (pages.service): what their shared first-seen records keep, and for how long."""

from __future__ import annotations

import redis

from aggregator.store.keys import NAMESPACE
from aggregator.web.state import SERVICES


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


async def test_paging_through_a_search_leaves_nothing_in_redis(redis_client_app, redis_clean) -> None:
    """200 pages past the first of one cached search add no key to Redis (issue 26 measured about two
    a page before: a `page:` record and a `sub:` record, kept for up to 30 days and a day)."""
    client = await redis_client_app()
    assert (await client.get("/search.atom", params={"q": "lecture", "count": "1"})).status == 200
    services = client.server.app[SERVICES]
    await services.subscriptions.flush()
    direct = redis.Redis.from_url(redis_clean)
    before = set(direct.keys("*"))
    assert any(b":page:" in k for k in before)  # the first page's record
    for start in range(2, 202):
        resp = await client.get(
            "/search.atom", params={"q": "lecture", "count": "1", "startIndex": str(start)}
        )
        assert resp.status == 200
        await resp.read()
    await services.subscriptions.flush()
    # Durations of the videos the pages showed are per video (bounded by the catalogues), not per page.
    added = {k for k in set(direct.keys("*")) - before if b":duration:" not in k}
    assert not [k for k in added if b":page:" in k or b":sub:" in k], added
    assert len(added) <= 2, added  # what every search shares (a period's popularity counts)
