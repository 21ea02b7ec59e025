"""Parsing upstream answers: golden files for the evidenced shapes, and the hostile ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aggregator.ilos.parseworker import with_terms
from aggregator.ilos.parsing import (
    UnparseableAnswer,
    parse_duration_text,
    parse_search_answer,
    plain_text,
    strip_title_prefix,
)
from aggregator.terms import Terms

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", ["ilos_evidence.rss", "ilos_answer.atom"])
def test_golden_answers(name: str) -> None:
    """The parsed videos of each golden answer, field by field, with the terms the parse worker
    gives them for ranking (UPDATE_GOLDEN=1 rewrites them)."""
    terms = Terms("en")
    videos = [with_terms(v, terms).to_json() for v in parse_search_answer((GOLDEN / name).read_bytes())]
    expected_path = GOLDEN / f"{name}.json"
    if UPDATE:
        expected_path.write_text(json.dumps(videos, indent=2, ensure_ascii=False) + "\n")
    assert videos == json.loads(expected_path.read_text())


def test_evidenced_rss_shape() -> None:
    videos = parse_search_answer((GOLDEN / "ilos_evidence.rss").read_bytes())
    by_tag = {v.randtag: v for v in videos}
    # Items without a randtag or a view link are skipped; a repeated randtag counts once.
    assert list(by_tag) == ["GqF8CpMD3Huk", "Hx7LmQ2pRt9a", "Sec0nds12345", "Dup1icate123"]
    first = by_tag["GqF8CpMD3Huk"]  # randtag from the /view/ path
    assert first.title == "open search 2"
    assert first.published.isoformat() == "2017-02-06T04:10:15+00:00"  # the military "Z" zone
    assert first.embed_url == "https://cloud.ilosvideos.com/embed/GqF8CpMD3Huk"
    assert first.thumbnail_url.startswith("https://d1.cloudfront.net/GqF8CpMD3Huk_180.jpg?Expires=")
    assert first.duration_ms is None and first.summary == ""
    second = by_tag["Hx7LmQ2pRt9a"]
    assert second.title == "Week 3 & lab <safety>"  # prefix gone, text unescaped once
    assert second.summary == "Goggles on. Gloves too & aprons."  # no tags, no script
    assert second.author == "Dr. Ada Okafor" and second.plays == 1234
    assert second.duration_ms == 910_000
    assert second.link == "https://app.ilosvideos.com/view/Hx7LmQ2pRt9a?sr=rss&autoplay=1"
    assert second.embed_url == "https://app.ilosvideos.com/embed/Hx7LmQ2pRt9a"
    assert by_tag["Sec0nds12345"].title == "Seconds duration"  # the VidGrid: prefix
    assert by_tag["Sec0nds12345"].duration_ms == 910_000
    assert by_tag["Dup1icate123"].duration_ms == 910_380  # milliseconds


def test_atom_answer() -> None:
    one, two = parse_search_answer((GOLDEN / "ilos_answer.atom").read_bytes())
    assert (one.randtag, one.title) == ("AtomVideo001", "Clinical skills 1")
    assert one.duration_ms == 3_723_000  # ISO 8601 PT1H2M3S
    assert one.summary == "History taking, part one."
    assert one.author == "Grace Rossi"
    assert two.randtag == "AtomVideo002" and two.duration_ms == 75_000  # Media RSS seconds
    assert two.published.isoformat() == "2022-01-01T10:00:00+00:00"  # converted to UTC


@pytest.mark.parametrize(
    "text, ms",
    [
        ("00:15:10", 910_000),
        ("15:10", 910_000),
        ("1:02:03", 3_723_000),
        ("0:59.5", 59_500),
        ("910", 910_000),
        ("910.38", 910_380),
        ("910380", 910_380),
        ("36000", 36_000_000),
        ("250ms", 250),
        ("PT15M10S", 910_000),
        ("PT2H", 7_200_000),
        (" 00:00:07 ", 7_000),
    ],
)
def test_duration_formats(text: str, ms: int) -> None:
    assert parse_duration_text(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "1:99", "1:2:3:4", "-5", "12:ab", "P", "1.5:00", None])
def test_durations_that_do_not_parse(text) -> None:
    assert parse_duration_text(text) is None


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>Whoops, looks like something went wrong.</h1>",
        b"",
        b"\x00\xff\xfe binary",
        b'{"error": "Invalid API key"}',
    ],
)
def test_documents_that_are_not_feeds(body: bytes) -> None:
    with pytest.raises(UnparseableAnswer):
        parse_search_answer(body)


def test_truncated_feed_keeps_the_items_that_parsed() -> None:
    body = (GOLDEN / "ilos_evidence.rss").read_bytes()
    cut = body[: body.index(b"<title>VidGrid")]
    tags = [v.randtag for v in parse_search_answer(cut)]
    assert tags[:2] == ["GqF8CpMD3Huk", "Hx7LmQ2pRt9a"]


def test_billion_laughs_is_not_expanded() -> None:
    """Ten levels of ten entities: 10^9 "lol"s if expanded. Neither parser may expand it."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE rss [{entities}]><rss version="2.0"><channel><item>'
        "<title>&lol9;</title><link>https://app.ilosvideos.com/view/Bomb00000001</link>"
        "</item></channel></rss>"
    ).encode()
    [video] = parse_search_answer(bomb)
    assert video.randtag == "Bomb00000001"
    assert "lol" * 10 not in video.title and len(video.title) < 20


def test_plain_text_and_title_prefixes() -> None:
    assert plain_text('<p>a</p><p>b<br>c</p><img src="x" onerror="alert(1)">') == "a b c"
    assert plain_text("<script>alert(1)</script>fine &amp; dandy") == "fine & dandy"
    assert plain_text("x" * 700).endswith("…") and len(plain_text("x" * 700)) == 600
    assert strip_title_prefix("ilos: Intro") == "Intro"
    assert strip_title_prefix("VidGrid:Intro") == "Intro"
    assert strip_title_prefix("Intro to ilos: a tour") == "Intro to ilos: a tour"


# -- the lxml fast path against feedparser ------------------------------------------

import random  # noqa: E402

from aggregator.demo.samples import demo_orgs, make_video  # noqa: E402
from aggregator.demo.simulator import Simulator  # noqa: E402
from aggregator.ilos import parsing  # noqa: E402


def both_ways(body: bytes):
    """(videos via the fast path or None if it declined, videos via feedparser)."""
    fast = parsing._rss_entries(body)
    slow = [parsing._video_from_entry(e) for e in parsing.feedparser_entries(body)]
    slow = [v for v in slow if v is not None]
    if fast is None:
        return None, slow
    return [v for v in (parsing._video_from_entry(e) for e in fast) if v is not None], slow


def dedupe(videos):
    seen, out = set(), []
    for v in videos:
        if v.randtag not in seen:
            seen.add(v.randtag)
            out.append(v)
    return out


def test_fast_path_reads_the_evidence_as_feedparser_does() -> None:
    fast, slow = both_ways((GOLDEN / "ilos_evidence.rss").read_bytes())
    assert fast is not None, "the evidenced shape must take the fast path"
    assert dedupe(fast) == dedupe(slow)
    character_reference = (
        b'<rss version="2.0"><channel><item><title>t &#169;</title>'
        b"<link>https://a/view/ABCDEFGH1234</link></item></channel></rss>"
    )
    fast, slow = both_ways(character_reference)
    assert fast is not None and fast == slow


# Hostile to a parser, yet plain text: the fast path must read these itself.
PLAIN_HOSTILE_TEXT = [
    "Q&A",
    "a < b",
    "x > y",
    'Tom & Jerry\'s "show"',
    "ünïcödé — “quotes” 😀",
    "line\nbreak\ttab",
    "50% off",
    "  padded  ",
    "ilos: prefixed",
    "VidGrid: also",
    "",
]
# Text that may be HTML or entities: the fast path may hand these to feedparser.
HOSTILE_TEXT = [
    *PLAIN_HOSTILE_TEXT,
    "<b>bold</b> move",
    "&amp;amp;",
    "<script>alert(1)</script>after",
    "&lt;i&gt;escaped&lt;/i&gt;",
    "<img src=x onerror=alert(1)>",
    "<p>para</p><p>two</p>",
    "a&nbsp;b",
    "&#169; 2024",
]
PLAIN_AUTHORS = ["Ada Okafor", "O'Brien & Sons", ""]
AUTHORS = [*PLAIN_AUTHORS, "ada@example.edu (Ada)", "<b>X</b>"]


@pytest.mark.parametrize("seed", range(12))
def test_fast_path_matches_feedparser_on_simulated_answers(seed: int) -> None:
    rng = random.Random(seed)
    keys = {"engineering": "k1", "medicine": "k2", "hr": "k3"}
    sim = Simulator(demo_orgs(keys))
    sim.base_url = "http://sim.test"
    taken = declined = 0
    for n, org in enumerate(sim.orgs):
        org.feed_format = "rss"
        org.duration_child = rng.choice([None, "clock", "seconds", "ms"])
        # The first org's answer is hostile plain text only, so the fast path must take it.
        texts, authors = (PLAIN_HOSTILE_TEXT, PLAIN_AUTHORS) if n == 0 else (HOSTILE_TEXT, AUTHORS)
        videos = list(org.videos[:15])
        for _ in range(6):
            v = make_video(rng, rng.choice(texts) + " " + rng.choice(texts), "x")
            v.description = rng.choice(HOSTILE_TEXT) + rng.choice(HOSTILE_TEXT)
            v.author = rng.choice(authors)
            videos.insert(rng.randrange(len(videos) + 1), v)
        body = sim._render(org, videos, "q", rng.choice(["", "ilos: "]))
        fast, slow = both_ways(body)
        if fast is not None:
            taken += 1
            assert dedupe(fast) == dedupe(slow)
        else:
            declined += 1
            assert slow, "feedparser must still read what the fast path declines"
    # The comparison ran: the fast path read at least one hostile document of the three.
    assert taken >= 1 and taken + declined == 3
    # Hostile authors make some documents decline; plain ones must not.
    plain = sim._render(sim.orgs[0], sim.orgs[0].videos, "q", "")
    assert parsing._rss_entries(plain) is not None


@pytest.mark.parametrize(
    ("body", "titles"),
    [
        (
            b'<rss version="2.0"><channel><item><title>x</title><link>https://a/view/ABCDEFGH1234</link>'
            b"<content:encoded xmlns:content='http://purl.org/rss/1.0/modules/content/'>x</content:encoded></item></channel></rss>",
            ["x"],
        ),
        (
            b'<rss version="2.0"><channel><item><title>t &#169; &amp;amp; &lt;b&gt;</title><link>https://a/view/ABCDEFGH1234</link></item></channel></rss>',
            ["t © &"],
        ),
        (
            b'<rss version="2.0"><channel><item><title>t</title><title>u</title><link>https://a/view/ABCDEFGH1234</link></item></channel></rss>',
            ["t"],
        ),
        (
            b'<rss version="2.0"><channel><item><title>t</title><pubDate>yesterday</pubDate><link>https://a/view/ABCDEFGH1234</link></item></channel></rss>',
            ["t"],
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss version="2.0"><channel><item><title>&e;</title></item></channel></rss>',
            [],
        ),
        (
            b'<rss version="0.91"><channel><item><title>t</title></item></channel></rss>',
            [],
        ),
        (
            b'<rss version="2.0"><channel><item><title>t</title><link>https://a/view/ABCDEFGH1234</link>&nbsp;</item></channel></rss>',
            ["t"],
        ),
    ],
)
def test_fast_path_declines_what_feedparser_must_judge(body: bytes, titles: list[str]) -> None:
    """Foreign elements, titles that may be HTML, repeats, odd dates, DTDs, other versions."""
    assert parsing._rss_entries(body) is None
    # ... and feedparser reads it: items without a view link are skipped, titles made plain.
    assert [v.title for v in parse_search_answer(body)] == titles
