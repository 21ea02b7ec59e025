"""Relevance ranking (search.rank): golden orders for small hand-made cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from aggregator.ilos.parseworker import with_terms
from aggregator.model import Video
from aggregator.search.rank import Ranking, rank
from aggregator.search.termstats import Snapshot
from aggregator.terms import Terms

EN = Terms("en")


def video(tag: str, title: str, summary: str = "", author: str = "", terms: Terms = EN) -> Video:
    return with_terms(
        Video(tag, title, f"https://v/{tag}", f"https://e/{tag}", summary, author=author), terms
    )


def order(answers, query: str, terms: Terms = EN, prior: float = 0.3, **kw) -> list[str]:
    ranking = Ranking(tuple(dict.fromkeys(terms.of(query))), Snapshot(0, 0), prior, **kw)
    return [r.video.randtag for r in rank(answers, ranking)]


def test_a_tiny_orgs_weak_first_match_does_not_outrank_a_huge_orgs_better_ones() -> None:
    """Taking turns put every org's first result before any org's second; now the text decides."""
    huge = [
        video("huge1", "Thermodynamics lecture 3: entropy and the second law"),
        video("huge2", "Entropy in thermodynamics, worked examples"),
        video("huge3", "Entropy: a second look at thermodynamics"),
    ]
    tiny = [video("tiny1", "Welcome week, campus tour", "a short word on entropy at the end")]
    # The shortest title with both words first (BM25 normalises for length), the tiny org last.
    assert order([("huge", huge), ("tiny", tiny)], "entropy thermodynamics") == [
        "huge2",
        "huge1",
        "huge3",
        "tiny1",
    ]


def test_a_video_two_orgs_returned_is_one_result_naming_both() -> None:
    shared = video("shared", "Lab safety induction")
    eng = [shared, video("eng2", "Safety in the workshop")]
    med = [video("med1", "Clinical lab safety"), shared]
    results = rank([("eng", eng), ("med", med)], Ranking(tuple(EN.of("lab safety")), Snapshot(0, 0)))
    [one] = [r for r in results if r.video.randtag == "shared"]
    assert one.orgs == ("eng", "med") and one.rank_in_org == (("eng", 1), ("med", 2))
    assert one.matched == ("title",)
    assert len(results) == 3


def test_empty_descriptions_rank_on_their_title_and_fields_say_what_matched() -> None:
    answers = [
        (
            "a",
            [
                video("nodesc", "Payroll basics"),
                video("desc", "Getting started", "how payroll works, and payroll dates", "Payroll Office"),
                video("none", "Campus map"),
            ],
        )
    ]
    results = rank(answers, Ranking(tuple(EN.of("payroll")), Snapshot(0, 0), position_prior=0.0))
    assert [r.video.randtag for r in results] == ["nodesc", "desc", "none"]
    assert {r.video.randtag: r.matched for r in results} == {
        "nodesc": ("title",),
        "desc": ("description", "author"),
        "none": (),
    }


def test_words_are_folded_and_stemmed_in_the_services_language() -> None:
    de = Terms("de")
    answers = [
        (
            "a",
            [
                video("other", "Mensa und Café", terms=de),
                video("plural", "Einführung: drei Vorlesungen zur Straße", terms=de),
            ],
        )
    ]
    # Vorlesung ~ Vorlesungen (German stemmer), STRASSE ~ Straße (case folding), cafe ~ Café (accents)
    assert order(answers, "vorlesung STRASSE", terms=de, prior=0.0) == ["plural", "other"]
    assert order(answers, "cafe", terms=de, prior=0.0) == ["other", "plural"]


def test_an_orgs_weight_scales_its_results_and_the_same_input_gives_the_same_scores() -> None:
    a = [video("a1", "Budget planning workshop")]
    b = [video("b1", "Budget planning workshop, again")]
    assert order([("a", a), ("b", b)], "budget planning", weights={"a": 1.0, "b": 3.0})[0] == "b1"
    first = rank([("a", a), ("b", b)], Ranking(tuple(EN.of("budget")), Snapshot(1, 10, {"budget": 2})))
    again = rank([("a", a), ("b", b)], Ranking(tuple(EN.of("budget")), Snapshot(1, 10, {"budget": 2})))
    assert first == again and all(r.score == round(r.score, 6) for r in first)


async def test_words_that_go_with_the_query_across_videos_seen_find_videos_without_its_words() -> None:
    """An org that lists its matches newest first (its engine read the transcripts) returns a
    lecture on heat engines that never says "thermodynamics" where the service can see, after a
    newer video that is about something else. The service's sample of videos seen shows which
    words go with "thermodynamics" (heat, engine, entropy), so the lecture comes first."""
    from aggregator.search.associations import Associations

    seen = [
        "Thermodynamics 1: heat and work",
        "Heat engines and entropy: thermodynamics revision",
        "Entropy, heat engines and the second law of thermodynamics",
        "Thermodynamics of engines: Carnot and heat",
        "Cafeteria opening hours",
        "Campus parking: where to leave a car",
        "Library opening hours and parking",
    ]
    sample = [
        " ".join(sorted(set(" ".join(video(f"s{i}", t).terms).split()))).encode() for i, t in enumerate(seen)
    ]
    assert (await Associations.of(sample)).expansion(("thermodynam",)) == {}  # too few to tell
    associations = await Associations.of(sample * 150)  # the same proportions over 1,050 videos
    assert not associations.ready(("thermodynam",))  # the first ask works it out (in a thread)
    assert "heat" in associations.expansion(tuple(EN.of("thermodynamics")))
    assert associations.ready(("thermodynam",))  # then it is kept with the snapshot
    dated = [
        ("newer", "Parking permits for the new term", 30),
        ("older", "Carnot heat engine, part 2", 20),
        ("oldest", "Library opening hours", 10),
    ]
    newest_first = [
        (
            "faculty",
            [
                replace(video(tag, title), published=datetime(2026, 11, day, tzinfo=UTC))
                for tag, title, day in dated
            ],
        )
    ]
    query = tuple(EN.of("thermodynamics"))
    without = rank(newest_first, Ranking(query, Snapshot(1, 7)))
    with_sample = rank(newest_first, Ranking(query, Snapshot(1, 7, {}, associations)))
    assert [r.video.randtag for r in without] == ["newer", "older", "oldest"]  # nothing matched
    assert [r.video.randtag for r in with_sample] == ["older", "newer", "oldest"]
    assert with_sample[0].matched == ()  # no typed word is in it: none is marked
