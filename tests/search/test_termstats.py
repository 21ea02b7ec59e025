"""Term statistics shared by every replica (search.termstats), through a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from aggregator.ilos.parseworker import with_terms
from aggregator.model import Video
from aggregator.search import associations
from aggregator.search.termstats import SAMPLE, SNAPSHOT_EVERY, TermStats
from aggregator.store.redis_cache import RedisCache
from aggregator.terms import Terms
from tests.conftest import FakeClock

EN = Terms("en")


def video(tag: str, title: str) -> Video:
    return with_terms(Video(tag, title, f"https://v/{tag}", f"https://e/{tag}"), EN)


async def test_what_one_replica_learns_tells_another_which_words_go_together(
    redis_clean, monkeypatch
) -> None:
    """One replica parses the answers, another ranks: the second's snapshot counts the first's
    videos and knows which of their words go together; the sample keeps only the newest."""
    monkeypatch.setattr(associations, "SAMPLE_SIZE", 4)
    monkeypatch.setattr("aggregator.search.termstats.SAMPLE_SIZE", 4)
    monkeypatch.setattr(associations, "MIN_SAMPLE", 4)  # a real one needs 1,000 videos to tell
    client = aioredis.Redis.from_url(redis_clean)
    clock = FakeClock()
    parsing, ranking = TermStats(RedisCache(client), clock), TermStats(RedisCache(client), clock)
    parsing.learn(
        [
            video("a", "Thermodynamics on a stadium tour"),  # the oldest: out of the sample
            video("b", "Thermodynamics: heat engines"),
            video("c", "Heat and thermodynamics"),
            video("d", "Thermodynamics, heat and work"),
            video("e", "Cafeteria menu"),
        ]
    )
    await parsing.snapshot()
    clock.advance(SNAPSHOT_EVERY)
    seen = await ranking.snapshot()
    assert seen.videos == 5 and seen.df["heat"] == 3
    assert seen.associations.videos == 4 and await client.llen(SAMPLE) == 4  # the newest four
    words = set(seen.associations.expansion(("thermodynam",)))
    assert {"heat", "engin", "work"} <= words and not {"stadium", "tour", "cafeteria", "menu"} & words
    await client.aclose()
