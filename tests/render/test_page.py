"""The search page (render.page): matched words marked in titles, hostile titles staying text."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.demo.simulator import SimVideo
from aggregator.terms import Terms, marked_spans


def test_marks_land_on_the_original_text_whatever_folding_does_to_lengths() -> None:
    terms = Terms("en")
    wanted = frozenset(terms.of("strasse istanbul lectures"))
    pieces = marked_spans("Straße-Tour: İSTANBUL lecture (ß)", wanted, terms)
    assert [p for p, marked in pieces if marked] == ["Straße", "İSTANBUL", "lecture"]
    assert "".join(p for p, _ in pieces) == "Straße-Tour: İSTANBUL lecture (ß)"


async def test_the_page_marks_matched_title_words_and_escapes_everything_else(client, sim) -> None:
    sim.org("engineering").videos.append(
        SimVideo(
            "HoStIlE00001",
            '<script>alert("x")</script> Straße & onboarding <mark>fake</mark>',
            "Eve",
            datetime(2026, 1, 5, tzinfo=UTC),
            60_000,
            1,
        )
    )
    page = await (await client.get("/", params={"q": "Straße onboarding"})).text()
    card = page[page.index("HoStIlE00001") :]
    title = card[card.index("<h2>") : card.index("</h2>")]
    assert "<mark>Straße</mark>" in title and "<mark>onboarding</mark>" in title
    assert "<script>" not in page and "&lt;script&gt;" in title
    assert "&lt;mark&gt;fake&lt;/mark&gt;" in title  # upstream's own markup stays text
    newest = await (await client.get("/", params={"q": "Straße onboarding", "sort": "date"})).text()
    assert "<mark>" not in newest  # a newest-first page is as it was


async def test_json_feed_items_say_why_they_stand_where_they_do(client) -> None:
    feed = await (await client.get("/search.json", params={"q": "onboarding"})).json()
    first = feed["items"][0]["_ilos"]
    assert isinstance(first["score"], float) and first["matched"]
    assert set(first["rank_in_org"]) <= set(first["orgs"]) and all(
        r >= 1 for r in first["rank_in_org"].values()
    )
    scores = [item["_ilos"]["score"] for item in feed["items"]]
    assert scores == sorted(scores, reverse=True)
    newest = await (await client.get("/search.json", params={"q": "onboarding", "sort": "date"})).json()
    assert "score" not in newest["items"][0]["_ilos"]


async def test_a_page_emptied_by_its_filters_blames_them_not_the_spelling(client) -> None:
    """It said 'No videos match' and advised checking the spelling, although videos matched and the
    filters removed them all."""
    matching = (await (await client.get("/search.json", params={"q": "onboarding", "count": "100"})).json())[
        "_opensearch"
    ]["totalResults"]
    assert matching > 0
    page = await (
        await client.get("/", params={"q": "onboarding", "duration": "long", "after": "2099-01-01"})
    ).text()
    summary = page[page.index('<p class="summary"') : page.index("</p>", page.index('<p class="summary"'))]
    assert f"{matching} videos match “onboarding”; none is long and published since 2099-01-01." in summary
    assert "check the spelling" not in page and "Remove a filter above" in page
    assert (
        'aria-label="Long (remove this filter' in page
        and 'aria-label="Since 2099-01-01 (remove this filter)"' in page
    )
    nothing = await (await client.get("/", params={"q": "zzzqqq"})).text()
    assert "No videos match “zzzqqq”." in nothing and "check the spelling" in nothing
