"""Merging and ranking: one result per randtag, reciprocal-rank scores, a total order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from aggregator.model import Sort, Video
from aggregator.search.merge import merge


def video(tag: str, day: int | None = None, **kw) -> Video:
    published = datetime(2024, 1, day, tzinfo=UTC) if day else None
    return Video(
        randtag=tag,
        title=f"title {tag}",
        link=f"https://app.ilosvideos.com/view/{tag}",
        embed_url=f"https://app.ilosvideos.com/embed/{tag}",
        published=published,
        **kw,
    )


def test_duplicates_become_one_result_naming_every_org() -> None:
    a = [video("AAAA", 1, duration_ms=1000), video("BBBB", 2)]
    b = [video("BBBB", 2, duration_ms=5000, author="Ada", summary="longer summary"), video("CCCC", 3)]
    results = merge([("eng", a), ("med", b)])
    assert [r.video.randtag for r in results] == ["BBBB", "AAAA", "CCCC"]
    top = results[0]
    assert top.orgs == ("eng", "med")
    assert top.score == 1.5  # 1/2 in eng + 1/1 in med
    # The richest view: every field either org knew.
    assert (top.video.duration_ms, top.video.author, top.video.summary) == (5000, "Ada", "longer summary")


def test_reciprocal_rank_prefers_videos_high_in_several_answers() -> None:
    # ZZZZ is second in one answer and first in the other: 1/2 + 1/1 beats SOLO's single 1/1,
    # although SOLO tops an answer and the randtag tie-break alone would put ZZZZ last.
    eng = [video("SOLO"), video("ZZZZ")]
    med = [video("ZZZZ"), video("LAST")]
    results = merge([("eng", eng), ("med", med)])
    assert [(r.video.randtag, r.score) for r in results] == [("ZZZZ", 1.5), ("SOLO", 1.0), ("LAST", 0.5)]


def test_equal_scores_break_on_the_randtag() -> None:
    eng = [video("SOLO"), video("BOTH")]
    med = [video("XXXX"), video("BOTH")]
    order = [r.video.randtag for r in merge([("eng", eng), ("med", med)])]
    assert order == ["BOTH", "SOLO", "XXXX"]  # all score 1.0


def test_an_org_listing_a_video_twice_counts_it_once() -> None:
    [only] = merge([("eng", [video("AAAA"), video("AAAA")])])
    assert only.score == 1.0 and only.orgs == ("eng",)


def test_date_sort_is_newest_first_and_undated_last() -> None:
    results = merge(
        [("eng", [video("OLD1", 1), video("NODATE"), video("NEW1", 9), video("NEW2", 9)])], Sort.DATE
    )
    assert [r.video.randtag for r in results] == ["NEW1", "NEW2", "OLD1", "NODATE"]


def test_same_answers_same_order_whatever_the_arrival_order() -> None:
    day = {"AAAA": 3, "BBBB": 1, "CCCC": 3, "DDDD": 2, "EEEE": 1}
    eng = [video(t, day[t]) for t in ["AAAA", "BBBB", "CCCC", "DDDD"]]
    med = [video(t, day[t]) for t in ["DDDD", "CCCC", "EEEE"]]
    for sort in Sort:
        orders = set()
        for perm in itertools.permutations([eng, med]):
            answers = [("eng", perm[0]), ("med", perm[1])]
            orders.add(tuple(r.video.randtag for r in merge(answers, sort)))
        assert len(orders) == 1, sort
