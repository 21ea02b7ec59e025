"""Every format says at feed level which organisations' results are missing (render.feeds,
render.jsonfeed, render.presentation): in words for people, in a fixed form for programs."""

from __future__ import annotations

from lxml import etree

from aggregator.render.feeds import ILOS_NS
from tests.helpers import NS

MISSING = "Medicine did not answer; its results are missing"


async def test_atom_rss_and_json_name_the_org_that_failed(client, sim) -> None:
    """The page said so, and Server-Timing; a feed reader or SharePoint saw a subtitle that
    still listed every organisation."""
    sim.org("medicine").fault = "500"
    atom = etree.fromstring(await (await client.get("/search.atom", params={"q": "onboarding"})).read())
    assert MISSING in atom.findtext("a:subtitle", namespaces=NS)
    [mark] = atom.findall(f"{{{ILOS_NS}}}missing")
    assert (mark.get("org"), mark.get("status"), mark.text) == ("medicine", "error", "Medicine")
    rss = etree.fromstring(await (await client.get("/search.rss", params={"q": "onboarding"})).read())
    assert MISSING in rss.findtext("channel/description")
    assert [m.get("org") for m in rss.findall(f"channel/{{{ILOS_NS}}}missing")] == ["medicine"]
    feed = await (await client.get("/search.json", params={"q": "onboarding"})).json()
    assert MISSING in feed["description"]
    assert feed["_ilos"]["missing"] == [{"org": "medicine", "name": "Medicine", "status": "error"}]


async def test_a_healthy_answer_says_nothing_and_stays_byte_stable(client) -> None:
    for path in ("/search.atom", "/search.rss", "/search.json"):
        first = await (await client.get(path, params={"q": "onboarding"})).read()
        again = await (await client.get(path, params={"q": "onboarding", "count": "20"})).read()
        assert first == again
        assert b"did not answer" not in first and ILOS_NS.encode() not in first and b'"missing"' not in first
