"""Parsing upstream answers: golden files for the evidenced shapes, and the hostile ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aggregator.parsing import (UnparseableAnswer, parse_duration_text, parse_search_answer,
                                plain_text, prescan_randtags, strip_title_prefix)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("name", ["ilos_evidence.rss", "ilos_answer.atom"])
def test_golden_answers(name: str) -> None:
    """The parsed videos of each golden answer, field by field (UPDATE_GOLDEN=1 rewrites them)."""
    videos = [v.to_json() for v in parse_search_answer((GOLDEN / name).read_bytes())]
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


@pytest.mark.parametrize("text, ms", [
    ("00:15:10", 910_000), ("15:10", 910_000), ("1:02:03", 3_723_000), ("0:59.5", 59_500),
    ("910", 910_000), ("910.38", 910_380), ("910380", 910_380), ("36000", 36_000_000),
    ("250ms", 250), ("PT15M10S", 910_000), ("PT2H", 7_200_000), (" 00:00:07 ", 7_000),
])
def test_duration_formats(text: str, ms: int) -> None:
    assert parse_duration_text(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "1:99", "1:2:3:4", "-5", "12:ab", "P", "1.5:00", None])
def test_durations_that_do_not_parse(text) -> None:
    assert parse_duration_text(text) is None


@pytest.mark.parametrize("body", [
    b"<html><body><h1>Whoops, looks like something went wrong.</h1>",
    b"",
    b"\x00\xff\xfe binary",
    b'{"error": "Invalid API key"}',
])
def test_documents_that_are_not_feeds(body: bytes) -> None:
    with pytest.raises(UnparseableAnswer):
        parse_search_answer(body)


def test_truncated_feed_keeps_the_items_that_parsed() -> None:
    body = (GOLDEN / "ilos_evidence.rss").read_bytes()
    cut = body[: body.index(b"<title>VidGrid")]
    tags = [v.randtag for v in parse_search_answer(cut)]
    assert tags[:2] == ["GqF8CpMD3Huk", "Hx7LmQ2pRt9a"]


def test_entity_expansion_is_not_a_bomb() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
            + b"".join(f'<!ENTITY {c}{i} "{"&a;" * 10}">'.encode() for i, c in enumerate("b"))
            + b']><rss version="2.0"><channel><item><title>&b0;</title>'
            b"<link>https://app.ilosvideos.com/view/Bomb00000001</link></item></channel></rss>")
    videos = parse_search_answer(bomb)
    assert len(videos) <= 1


def test_prescan_finds_the_videos_that_need_a_lookup() -> None:
    body = (GOLDEN / "ilos_evidence.rss").read_bytes()
    # Hx7L.., Sec0.. and the first Dup1.. carry a duration that parses.
    assert prescan_randtags(body) == ["GqF8CpMD3Huk", "Dup1icate123"]
    assert prescan_randtags((GOLDEN / "ilos_answer.atom").read_bytes()) == ["AtomVideo002"]


def test_plain_text_and_title_prefixes() -> None:
    assert plain_text('<p>a</p><p>b<br>c</p><img src="x" onerror="alert(1)">') == "a b c"
    assert plain_text("<script>alert(1)</script>fine &amp; dandy") == "fine & dandy"
    assert plain_text("x" * 700).endswith("…") and len(plain_text("x" * 700)) == 600
    assert strip_title_prefix("ilos: Intro") == "Intro"
    assert strip_title_prefix("VidGrid:Intro") == "Intro"
    assert strip_title_prefix("Intro to ilos: a tour") == "Intro to ilos: a tour"
