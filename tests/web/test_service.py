"""The service end to end: real HTTP to our app and from it to the simulated ilos."""

from __future__ import annotations

import re
from html import unescape

import pytest

from aggregator.demo.simulator import search_catalog
from aggregator.model import format_duration
from aggregator.web.app import create_app
from tests.conftest import KEYS, make_config
from tests.helpers import NS, assert_valid_atom, entry_ids, link


def expected_matches(sim, query: str, orgs=("engineering", "medicine", "hr")) -> dict[str, int]:
    """randtag -> duration_ms of every video any org would return."""
    found = {}
    for org in orgs:
        for v in search_catalog(sim.org(org).videos, query):
            found[v.randtag] = v.duration_ms
    return found


async def test_merged_deduplicated_feed_with_durations(client, sim) -> None:
    resp = await client.get("/search.atom", params={"q": "onboarding", "count": "100"})
    assert resp.status == 200
    assert resp.content_type == "application/atom+xml"
    body = await resp.read()
    doc = assert_valid_atom(body)
    expected = expected_matches(sim, "onboarding")
    assert len(expected) >= 8  # the demo catalogs share videos, so this tests the dedupe
    ids = entry_ids(doc)
    assert sorted(ids) == sorted(f"urn:ilos:video:{t}" for t in expected)
    for entry in doc.findall("a:entry", NS):
        tag = entry.findtext("a:id", namespaces=NS).rsplit(":", 1)[1]
        media = entry.find("media:content", NS)
        assert media.get("url") == f"https://app.ilosvideos.com/embed/{tag}"
        assert (media.get("type"), media.get("medium")) == ("text/html", "video")
        seconds = int(media.get("duration"))
        assert abs(seconds - expected[tag] / 1000) <= 1, tag
        assert f"Duration {format_duration(seconds * 1000)}" in entry.findtext("a:summary", namespaces=NS)
        assert entry.find("media:thumbnail", NS).get("url") == f"http://videos.test/thumbnails/{tag}"
        assert not entry.findtext("a:title", namespaces=NS).startswith(("ilos:", "VidGrid:"))
    shared = [e for e in doc.findall("a:entry", NS) if len(e.findall("a:category", NS)) == 3]
    assert len(shared) == 2  # "Welcome to campus" and "IT onboarding" are in every org
    assert {c.get("term") for c in shared[0].findall("a:category", NS)} == set(KEYS)
    assert doc.findtext("os:totalResults", namespaces=NS) == str(len(expected))


async def test_no_org_key_anywhere(client, sim) -> None:
    resp = await client.get("/search.atom", params={"q": "onboarding"})
    text = (await resp.read()).decode() + str(resp.headers)
    page = await client.get("/", params={"q": "onboarding"})
    text += await page.text() + str(page.headers)
    for key in KEYS.values():
        assert key not in text


async def test_feed_links_and_opensearch_elements(client, sim) -> None:
    resp = await client.get("/search.atom", params={"q": "onboarding", "count": "3", "startIndex": "4"})
    doc = assert_valid_atom(await resp.read())
    total = len(expected_matches(sim, "onboarding"))
    assert len(entry_ids(doc)) == 3
    assert doc.findtext("os:startIndex", namespaces=NS) == "4"
    assert doc.findtext("os:itemsPerPage", namespaces=NS) == "3"
    query = doc.find("os:Query", NS)
    assert (query.get("role"), query.get("searchTerms")) == ("request", "onboarding")
    assert link(doc, "self") == "http://videos.test/search.atom?q=onboarding&count=3&startIndex=4"
    assert link(doc, "search") == "http://videos.test/opensearch.xml"
    assert link(doc, "first").endswith("startIndex=1")
    assert link(doc, "previous").endswith("startIndex=1")
    assert link(doc, "next").endswith("startIndex=7")
    last = int(link(doc, "last").rsplit("=", 1)[1])
    assert last <= total < last + 3


async def test_paging_walks_every_result_once(client, sim) -> None:
    seen: list[str] = []
    url = "/search.atom?q=onboarding&count=4"
    while url:
        doc = assert_valid_atom(await (await client.get(url)).read())
        seen += entry_ids(doc)
        nxt = link(doc, "next")
        url = nxt and nxt.replace("http://videos.test", "")
    assert len(seen) == len(set(seen)) == len(expected_matches(sim, "onboarding"))


async def test_same_results_give_the_same_bytes(client) -> None:
    """Upstream re-signs thumbnails on every answer; our feed must not change for that."""
    first = await (await client.get("/search.atom", params={"q": "onboarding"})).read()
    second = await (await client.get("/search.atom", params={"q": "onboarding"})).read()
    assert first == second
    assert b"Signature" not in first


async def test_rate_limited_org_is_skipped_until_retry_after(client, sim) -> None:
    sim.org("hr").fault = "429"
    first = await client.get("/search.atom", params={"q": "benefits"})
    assert "org-hr;" in first.headers["Server-Timing"]
    before = len(sim.calls("hr", "search"))
    second = await client.get("/search.atom", params={"q": "payroll"})
    assert 'desc="skipped"' in second.headers["Server-Timing"]
    assert len(sim.calls("hr", "search")) == before  # we honoured Retry-After


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "q: is required"),
        ({"q": "x" * 257}, "q: must be at most 256 characters"),
        ({"q": "a", "count": "0"}, "count: must be a whole number from 1 to 100"),
        ({"q": "a", "count": "101"}, "count: must be a whole number from 1 to 100"),
        ({"q": "a", "count": "ten"}, "count: must be a whole number from 1 to 100"),
        ({"q": "a", "startIndex": "0"}, "startIndex: must be a whole number from 1 to 100000"),
        ({"q": "a", "startPage": "-1"}, "startPage: must be a whole number from 1 to 100000"),
        ({"q": "a", "sort": "views"}, "sort: must be relevance or date"),
        (
            {"q": "a", "org": "engineering,nope"},
            "org: must be a comma-separated list of known organisation ids",
        ),
        ({"q": "a\x00b"}, "q: must not contain control characters"),
    ],
)
async def test_bad_parameters_are_400s_naming_the_rule(client, sim, params, message) -> None:
    resp = await client.get("/search.atom", params=params)
    assert resp.status == 400
    assert message in await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    assert sim.calls(endpoint="search") == []


async def test_org_and_sort_parameters(client, sim) -> None:
    resp = await client.get("/search.atom", params={"q": "onboarding", "org": "hr", "sort": "date"})
    doc = assert_valid_atom(await resp.read())
    assert {c.get("term") for c in doc.iter("{http://www.w3.org/2005/Atom}category")} <= set(KEYS)
    assert sim.calls("engineering", "search") == [] and sim.calls("medicine", "search") == []
    published = [e.findtext("a:published", namespaces=NS) for e in doc.findall("a:entry", NS)]
    assert published == sorted(published, reverse=True)
    assert "org=hr" in link(doc, "self") and "sort=date" in link(doc, "self")


async def test_description_health_and_page(client) -> None:
    resp = await client.get("/opensearch.xml")
    assert resp.content_type == "application/opensearchdescription+xml"
    text = await resp.text()
    assert (
        'template="http://videos.test/search.atom?q={searchTerms}&amp;count={count?}&amp;startIndex={startIndex?}&amp;duration={ilos:duration?}&amp;after={ilos:after?}"'
        in text
    )
    assert (await (await client.get("/healthz")).text()).strip() == "ok"
    page = await client.get("/", params={"q": "onboarding"})
    html = await page.text()
    shown = html.replace("<mark>", "").replace("</mark>", "")  # the query's words are marked
    assert page.status == 200 and "Welcome to campus: onboarding for all staff" in shown
    assert "Welcome to campus: <mark>onboarding</mark> for all staff" in html
    assert '<link rel="search" type="application/opensearchdescription+xml"' in html


async def test_process_pool_parsing(aiohttp_client, sim) -> None:
    """The production setting: feedparser in worker processes, not on the loop."""
    client = await aiohttp_client(create_app(make_config(sim, server={"parse_workers": 2})))
    resp = await client.get("/search.atom", params={"q": "onboarding", "count": "100"})
    doc = assert_valid_atom(await resp.read())
    assert len(entry_ids(doc)) == len(expected_matches(sim, "onboarding"))


async def test_metrics(client, sim) -> None:
    sim.org("hr").fault = "500"
    await client.get("/search.atom", params={"q": "onboarding"})
    await client.get("/search.atom", params={"q": "onboarding"})
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert 'ilosagg_org_answers_total{org="engineering",status="ok"} 1.0' in text
    assert 'ilosagg_org_answers_total{org="hr",status="error"} 1.0' in text
    assert 'ilosagg_upstream_requests_total{endpoint="search",org="hr",outcome="http-error"} 1.0' in text
    assert 'ilosagg_pages_total{format="atom",source="rendered"} 1.0' in text
    assert 'ilosagg_pages_total{format="atom",source="reused"} 1.0' in text
    assert 'ilosagg_org_answer_seconds_bucket{le="8.0",org="medicine"}' in text
    assert 'ilosagg_upstream_request_seconds_count{endpoint="search",org="hr"} 1.0' in text
    for figure in ("lag", "busy", "cpu", "iteration_cpu"):  # how late the loop ran, why, how long it was held
        assert f"ilosagg_event_loop_{figure}_max_seconds " in text
    for key in KEYS.values():
        assert key not in text


async def test_a_dead_parse_worker_is_replaced(aiohttp_client, sim) -> None:
    """A worker killed (for memory, say) must not break every later search."""
    import os
    import signal as signals

    from aggregator.web.state import SERVICES

    app = create_app(make_config(sim, server={"parse_workers": 1}))
    client = await aiohttp_client(app)
    assert (await client.get("/search.atom", params={"q": "onboarding"})).status == 200
    pool = app[SERVICES].parse_pool
    assert len(pool.pids) == 1
    for pid in pool.pids:
        os.kill(pid, signals.SIGKILL)
    resp = await client.get("/search.atom", params={"q": "lecture", "count": "100"})
    assert 'desc="error"' not in resp.headers["Server-Timing"]
    assert len(entry_ids(assert_valid_atom(await resp.read()))) == len(expected_matches(sim, "lecture"))


async def test_hostile_query_strings_never_cause_a_5xx(client, sim) -> None:
    import random

    rng = random.Random(7)
    pieces = [
        "q=onboarding",
        "q=",
        "q=%ff%fe",
        "q=%00",
        "q=%E2%80%AE",
        "q=" + "a" * 300,
        "q=a&q=b",
        "count=0",
        "count=-1",
        "count=%EF%BC%91",
        "count=1e3",
        "count=99999999999999999999",
        "startIndex=+5",
        "startIndex=1.5",
        "startPage=0",
        "startPage=9999999",
        "sort=",
        "sort=DATE",
        "org=",
        "org=,,,",
        "org=engineering,engineering",
        "org=../../etc",
        "key=",
        "embed=1",
        "%zz=1",
        "&&&",
        "q=%3Cscript%3E",
        "q=" + "%F0%9F%98%80" * 40,
        "count=20&count=30",
    ]
    paths = ["/", "/embed", "/search.atom", "/search.rss", "/search.json", "/suggest"]
    for _ in range(150):
        query = "&".join(rng.sample(pieces, rng.randint(1, 4)))
        path = rng.choice(paths)
        resp = await client.get(f"{path}?{query}")
        assert resp.status < 500, (path, query, resp.status)
        if resp.status >= 400:
            assert resp.headers["Cache-Control"] == "no-store"


async def test_text_xml_forbids_is_dropped_never_a_500(client, sim) -> None:
    """U+FFFE/U+FFFF in q, and NUL, U+0001 and U+FFFF in an upstream title."""
    import random

    from aggregator.demo.samples import make_video

    hostile = make_video(random.Random(1), "Onboarding \x00\x01 for \uffff everyone\ufffe", "hr")
    sim.org("engineering").videos.append(hostile)
    for path in ("/search.atom", "/search.rss", "/search.json", "/"):
        for q in ("onboarding", "onboarding\ufffe", "onboarding\uffff"):
            resp = await client.get(path, params={"q": q, "count": "100"})
            assert resp.status == 200, (path, q)
            body = await resp.read()
            shown = body.replace(b"<mark>", b"").replace(b"</mark>", b"")  # the page marks the query
            assert b"Onboarding for everyone" in shown.replace(b"  ", b" ")
    only_forbidden = await client.get("/search.atom", params={"q": "\uffff"})
    assert only_forbidden.status == 400 and "q: is required" in await only_forbidden.text()


@pytest.mark.parametrize("duration", ["9" * 400, "-5", "99999999999", "nan", "1e308"])
async def test_absurd_feed_durations_are_unknown_not_errors(sim, duration) -> None:
    """A Media RSS duration that cannot be a video's: the items are listed, their lengths unknown."""
    from aggregator.ilos.parsing import parse_search_answer

    medicine = sim.org("medicine")
    medicine.duration_child = None
    body = sim._render(medicine, medicine.videos[:3], "q", "")
    hostile = body.replace(b'medium="image"', f'medium="image" duration="{duration}"'.encode())
    assert hostile.count(b"duration=") == 3
    videos = parse_search_answer(hostile)
    assert len(videos) == 3 and all(v.duration_ms is None for v in videos)


@pytest.mark.parametrize(
    "data",
    [
        {"hours": "9" * 4299, "mins": "0", "secs": "0"},
        {"hours": "200", "mins": "0", "secs": "0"},  # 200 h: over seven days
        {"totalMs": 10**15},
        {"totalMs": -1},
        {"hours": "-1", "mins": "0", "secs": "0"},
    ],
)
async def test_absurd_metadata_durations_are_unknown(data) -> None:
    import json as jsonlib

    from aggregator.ilos.client import parse_metadata_answer

    duration, detail = parse_metadata_answer(jsonlib.dumps({"level": "success", "data": data}).encode())
    assert duration is None and detail


async def test_facet_counts_are_exact_whatever_the_page_size(client) -> None:
    """Each length link's count is the total its filter gives, in every format; so are the orgs'."""
    expected = {}
    for length in ("short", "medium", "long"):
        resp = await client.get(f"/search.json?q=recorded&duration={length}&count=1")
        expected[length.capitalize()] = (await resp.json())["_opensearch"]["totalResults"]
    for org, name in (("engineering", "Engineering"), ("medicine", "Medicine"), ("hr", "Human Resources")):
        resp = await client.get(f"/search.json?q=recorded&org={org}&count=1")
        expected[name] = (await resp.json())["_opensearch"]["totalResults"]
    assert expected["Engineering"] > 0 and sum(expected[k] for k in ("Short", "Medium", "Long")) > 20
    for count in (1, 20, 100):
        html = await (await client.get(f"/?q=recorded&count={count}")).text()
        nav = html[html.index('aria-label="Refine these results"') : html.index("</nav>")]
        shown = dict(re.findall(r">([A-Z][A-Za-z ]+?) <span class=\"n\">(\d+)</span>", nav))
        assert {k: int(v) for k, v in shown.items()} == expected, count


async def test_active_filters_are_chips_that_remove_themselves(client) -> None:
    html = await (await client.get("/?q=lecture&duration=long&after=2020-01-01&org=engineering")).text()
    chips = html[
        html.index('aria-label="Active filters"') : html.index("</ul>", html.index("Active filters"))
    ]
    links = [unescape(h) for h in re.findall(r'href="([^"]+)"', chips)]
    assert len(links) == 3
    assert "duration=" not in links[0] and "after=2020-01-01" in links[0] and "org=engineering" in links[0]
    assert "after=" not in links[1] and "duration=long" in links[1]
    assert "org=" not in links[2] and "duration=long" in links[2]
    # The feeds do not carry the page's facets.
    atom_body = await (await client.get("/search.atom?q=lecture&duration=long")).text()
    assert "Refine" not in atom_body
