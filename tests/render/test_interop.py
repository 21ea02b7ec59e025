"""Our feeds through independent parsers: each sees every item, its link and date, and its duration.

feedparser, lemon24's `reader`, `atoma` and `fastfeedparser` read the same
Atom, RSS and JSON Feed bodies. The duration must be there in a
machine-readable field where the parser exposes one (Media RSS,
`itunes:duration`, JSON Feed attachments), and otherwise in the summary text.
"""

from __future__ import annotations

import json
from pathlib import Path

import atoma
import fastfeedparser
import feedparser
from reader import make_reader

from aggregator.model import format_duration

Q = {"q": "onboarding", "count": "100"}


async def feeds(client) -> tuple[bytes, bytes, bytes, dict[str, dict]]:
    bodies = [
        await (await client.get(path, params=Q)).read()
        for path in ("/search.atom", "/search.rss", "/search.json")
    ]
    truth = {item["id"]: item for item in json.loads(bodies[2])["items"]}
    assert len(truth) >= 8
    return bodies[0], bodies[1], bodies[2], truth


def seconds(item: dict) -> int:
    return item["attachments"][0]["duration_in_seconds"]


async def test_feedparser(client) -> None:
    atom, rss, _, truth = await feeds(client)
    for body in (atom, rss):
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0 and {e.id for e in parsed.entries} == set(truth)
        for e in parsed.entries:
            assert e.link == truth[e.id]["url"] and e.published_parsed
            assert int(e.media_content[0]["duration"]) == seconds(truth[e.id])
            if body is rss:
                assert int(e.itunes_duration) == seconds(truth[e.id])


async def test_reader(client, tmp_path: Path) -> None:
    atom, rss, _, truth = await feeds(client)
    (tmp_path / "feed.atom").write_bytes(atom)
    (tmp_path / "feed.rss").write_bytes(rss)
    with make_reader(":memory:", feed_root=str(tmp_path)) as reader:
        for name in ("feed.atom", "feed.rss"):
            reader.add_feed(name)
        reader.update_feeds()
        for name in ("feed.atom", "feed.rss"):
            entries = list(reader.get_entries(feed=name))
            assert {e.id for e in entries} == set(truth)
            for e in entries:
                assert e.link == truth[e.id]["url"] and (e.published or e.updated)
                # reader exposes no Media RSS or iTunes duration: it is in the summary text.
                assert f"Duration {format_duration(seconds(truth[e.id]) * 1000)}" in e.summary


async def test_atoma(client) -> None:
    atom, rss, js, truth = await feeds(client)
    atom_feed = atoma.parse_atom_bytes(atom)
    assert {e.id_ for e in atom_feed.entries} == set(truth)
    for e in atom_feed.entries:
        assert e.links[0].href == truth[e.id_]["url"] and e.published
        assert f"Duration {format_duration(seconds(truth[e.id_]) * 1000)}" in e.summary.value
    rss_feed = atoma.parse_rss_bytes(rss)
    assert {i.guid for i in rss_feed.items} == set(truth)
    for i in rss_feed.items:
        assert i.link == truth[i.guid]["url"] and i.pub_date
        assert f"Duration {format_duration(seconds(truth[i.guid]) * 1000)}" in i.description
    json_feed = atoma.parse_json_feed_bytes(js)
    assert {i.id_ for i in json_feed.items} == set(truth)
    for i in json_feed.items:
        assert i.url == truth[i.id_]["url"] and i.date_published
        assert i.attachments[0].duration.total_seconds() == seconds(truth[i.id_])  # machine-readable


async def test_fastfeedparser(client) -> None:
    atom, rss, _, truth = await feeds(client)
    for body in (atom, rss):
        parsed = fastfeedparser.parse(body)
        entries = parsed["entries"]
        assert {e["id"] for e in entries} == set(truth)
        for e in entries:
            assert e["link"] == truth[e["id"]]["url"] and e.get("published")
            text = e.get("description") or e.get("summary") or ""
            assert f"Duration {format_duration(seconds(truth[e['id']]) * 1000)}" in text
