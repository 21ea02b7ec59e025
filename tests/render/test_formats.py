"""Every consumer's format over the same simulated results: same ids, same durations, same paging."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import feedparser
import pytest
from lxml import etree

from aggregator.demo.simulator import search_catalog
from aggregator.web.app import create_app
from tests.conftest import make_config
from tests.helpers import NS, assert_valid_atom

OS = "http://a9.com/-/spec/opensearch/1.1/"
ATOM = "http://www.w3.org/2005/Atom"
MEDIA = "http://search.yahoo.com/mrss/"


async def get(client, path: str, **params):
    resp = await client.get(path, params=params)
    assert resp.status == 200, await resp.text()
    return resp, await resp.read()


def atom_entries(body: bytes) -> dict[str, int | None]:
    doc = assert_valid_atom(body)
    out = {}
    for e in doc.findall("a:entry", NS):
        d = e.find("media:content", NS).get("duration")
        out[e.findtext("a:id", namespaces=NS)] = int(d) if d else None
    return out


def rss_entries(body: bytes) -> dict[str, int | None]:
    channel = etree.fromstring(body).find("channel")
    out = {}
    for item in channel.findall("item"):
        d = item.find(f"{{{MEDIA}}}content").get("duration")
        out[item.findtext("guid")] = int(d) if d else None
    return out


def json_entries(body: bytes) -> dict[str, int | None]:
    out = {}
    for item in json.loads(body)["items"]:
        ms = item["_ilos"]["duration_ms"]
        out[item["id"]] = (ms + 500) // 1000 if ms is not None else None
    return out


class Elements(HTMLParser):
    """Every element and attribute name a browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.scripts: list[str | None] = []  # each script's src (None: inline)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))


class Cards(HTMLParser):
    """The result cards of our page: (title link, duration badge) in order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.durations: list[str] = []
        self.next_href: str | None = None
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and a.get("class") == "duration":
            self._in = "duration"
        if tag == "a" and a.get("rel") == "next":
            self.next_href = a["href"]
        if tag == "h2":
            self._in = "h2"
        if tag == "a" and self._in == "h2":
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag in ("span", "h2"):
            self._in = None

    def handle_data(self, data):
        if self._in == "duration":
            self.durations.append(data)


async def test_every_format_carries_the_same_results(client, sim) -> None:
    q = {"q": "onboarding", "count": "100"}
    _, atom = await get(client, "/search.atom", **q)
    _, rss = await get(client, "/search.rss", **q)
    resp, js = await get(client, "/search.json", **q)
    assert resp.content_type == "application/feed+json"
    a, r, j = atom_entries(atom), rss_entries(rss), json_entries(js)
    assert list(a) == list(r) == list(j)  # same ids, same order
    assert a == r == j  # same whole-second durations
    assert all(d is not None for d in a.values())
    _, html = await get(client, "/", **q)
    cards = Cards()
    cards.feed(html.decode())
    assert len(cards.links) == len(a)
    assert len(cards.durations) == len(a)
    assert all(re.fullmatch(r"(\d+:)?\d{1,2}:\d\d", d) for d in cards.durations)


async def test_rss_is_clean_rss_2_with_opensearch_and_media(client, sim) -> None:
    resp, body = await get(client, "/search.rss", q="onboarding", count="5")
    assert resp.content_type == "application/rss+xml"
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0 and parsed.version == "rss20"
    channel = etree.fromstring(body).find("channel")
    assert channel.findtext(f"{{{OS}}}totalResults") == str(len(sim_matches(sim, "onboarding")))
    assert channel.findtext(f"{{{OS}}}startIndex") == "1"
    assert channel.findtext(f"{{{OS}}}itemsPerPage") == "5"
    assert channel.find(f"{{{OS}}}Query").get("role") == "request"
    rels = {el.get("rel"): el.get("href") for el in channel.findall(f"{{{ATOM}}}link")}
    assert rels["self"].startswith("http://videos.test/search.rss?q=onboarding")
    assert rels["search"] == "http://videos.test/opensearch.xml"
    assert rels["next"].endswith("startIndex=6")
    item = channel.find("item")
    assert item.find("guid").get("isPermaLink") == "false"
    assert item.find("guid").text.startswith("urn:ilos:video:")
    description = item.findtext("description")
    assert "<" not in description and re.search(r"Duration (\d+:)?\d{1,2}:\d\d", description)
    assert item.findtext("pubDate") and item.findtext("link").startswith("https://app.ilosvideos.com/view/")
    assert item.find(f"{{{MEDIA}}}thumbnail").get("url").startswith("http://videos.test/thumbnails/")
    assert [c.text for c in item.findall("category")]
    assert item.findtext("{http://purl.org/dc/elements/1.1/}creator")


def sim_matches(sim, q):
    return {v.randtag for o in sim.orgs for v in search_catalog(o.videos, q)}


@pytest.mark.parametrize("fmt", ["atom", "rss", "json", "html"])
async def test_paging_walks_every_result_once_in_every_format(client, sim, fmt) -> None:
    seen: list[str] = []
    path = {"atom": "/search.atom", "rss": "/search.rss", "json": "/search.json", "html": "/"}[fmt]
    url = f"{path}?q=onboarding&count=5"
    pages = 0
    while url:
        resp = await client.get(url)
        body = await resp.read()
        pages += 1
        if fmt == "atom":
            doc = etree.fromstring(body)
            seen += [e.findtext(f"{{{ATOM}}}id") for e in doc.findall(f"{{{ATOM}}}entry")]
            nxt = next(
                (el.get("href") for el in doc.findall(f"{{{ATOM}}}link") if el.get("rel") == "next"), None
            )
        elif fmt == "rss":
            channel = etree.fromstring(body).find("channel")
            seen += [i.findtext("guid") for i in channel.findall("item")]
            nxt = next(
                (el.get("href") for el in channel.findall(f"{{{ATOM}}}link") if el.get("rel") == "next"), None
            )
        elif fmt == "json":
            doc = json.loads(body)
            seen += [i["id"] for i in doc["items"]]
            nxt = doc.get("next_url")
        else:
            cards = Cards()
            cards.feed(body.decode())
            seen += cards.links
            nxt = cards.next_href and cards.next_href.replace("&amp;", "&")
        url = nxt and nxt.replace("http://videos.test", "")
    total = len(sim_matches(sim, "onboarding"))
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 5)


async def test_start_page_and_start_index_agree(client) -> None:
    _, by_page = await get(client, "/search.json", q="onboarding", count="4", startPage="2")
    _, by_index = await get(client, "/search.json", q="onboarding", count="4", startIndex="5")
    assert [i["id"] for i in json.loads(by_page)["items"]] == [i["id"] for i in json.loads(by_index)["items"]]
    _, past = await get(client, "/search.json", q="onboarding", startIndex="999")
    assert json.loads(past)["items"] == [] and "next_url" not in json.loads(past)


async def test_json_feed_fields(client) -> None:
    _, body = await get(client, "/search.json", q="onboarding", count="3")
    feed = json.loads(body)
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == "http://videos.test/search.json?q=onboarding&count=3&startIndex=1"
    assert feed["next_url"].endswith("startIndex=4")
    item = feed["items"][0]
    assert {"id", "url", "title", "summary", "content_text", "date_published", "image", "authors"} <= set(
        item
    )
    assert set(item["_ilos"]) >= {"randtag", "duration_ms", "orgs", "embed_url"}
    assert item["id"] == "urn:ilos:video:" + item["_ilos"]["randtag"]
    assert item["date_published"].endswith("Z")


async def test_bad_parameters_in_the_clients_format(client) -> None:
    resp = await client.get("/search.json", params={"q": "x", "count": "1000"})
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "count"
    page = await client.get("/", params={"q": "x", "sort": "popular"})
    assert page.status == 400 and "sort: must be relevance or date" in await page.text()
    assert "<html" in await page.text()


async def test_description_document(client) -> None:
    resp, body = await get(client, "/opensearch.xml")
    assert resp.content_type == "application/opensearchdescription+xml"
    doc = etree.fromstring(body)
    assert doc.tag == f"{{{OS}}}OpenSearchDescription"
    short = doc.findtext(f"{{{OS}}}ShortName")
    assert short and len(short) <= 16
    for tag in ("LongName", "Description", "Tags"):
        assert doc.findtext(f"{{{OS}}}{tag}")
    assert (
        doc.findtext(f"{{{OS}}}InputEncoding") == "UTF-8"
        and doc.findtext(f"{{{OS}}}OutputEncoding") == "UTF-8"
    )
    assert doc.find(f"{{{OS}}}Query").get("role") == "example"
    templates = {u.get("type"): u.get("template") for u in doc.findall(f"{{{OS}}}Url")}
    paged = "q={searchTerms}&count={count?}&startIndex={startIndex?}&duration={ilos:duration?}&after={ilos:after?}"
    assert templates == {
        "text/html": f"http://videos.test/?{paged}",
        "application/atom+xml": f"http://videos.test/search.atom?{paged}",
        "application/rss+xml": f"http://videos.test/search.rss?{paged}",
        "application/feed+json": f"http://videos.test/search.json?{paged}",
        "application/x-suggestions+json": "http://videos.test/suggest?q={searchTerms}",
        "application/opensearchdescription+xml": "http://videos.test/opensearch.xml",
    }
    assert all(u.get("method", "get") == "get" for u in doc.findall(f"{{{OS}}}Url"))
    images = {i.get("width"): i.text for i in doc.findall(f"{{{OS}}}Image")}
    assert set(images) == {"16", "64"}
    for url in images.values():
        icon = await client.get(url.replace("http://videos.test", ""))
        assert icon.content_type == "image/png" and (await icon.read())[:8] == b"\x89PNG\r\n\x1a\n"
    osdx = await client.get("/search.osdx")
    assert "attachment" in osdx.headers["Content-Disposition"]
    connector = etree.fromstring(await osdx.read())
    assert connector.find(f"{{{OS}}}Url").get("type") == "application/rss+xml"


async def test_description_is_configurable(aiohttp_client, sim) -> None:
    extra = (
        '[description]\nshort_name = "Uni videos"\ncontact = "video@example.edu"\nexample_query = "welcome"\n'
    )
    client = await aiohttp_client(create_app(make_config(sim, extra=extra)))
    doc = etree.fromstring(await (await client.get("/opensearch.xml")).read())
    assert doc.findtext(f"{{{OS}}}ShortName") == "Uni videos"
    assert doc.findtext(f"{{{OS}}}Contact") == "video@example.edu"
    assert doc.find(f"{{{OS}}}Query").get("searchTerms") == "welcome"


async def test_suggestions_come_from_memory(client, sim) -> None:
    empty = await (await client.get("/suggest", params={"q": "onb"})).json()
    assert empty == ["onb", []]
    await client.get("/search.atom", params={"q": "onboarding"})
    calls = len(sim.log)
    resp = await client.get("/suggest", params={"q": "Onb"})
    assert resp.content_type == "application/x-suggestions+json"
    prefix, completions = await resp.json()
    assert prefix == "Onb"
    assert "onboarding" not in completions  # one caller's query is nobody else's business
    assert "Onboarding for managers: approving leave" in completions  # a title starting so
    assert 0 < len(completions) <= 10
    inside = (await (await client.get("/suggest", params={"q": "rotas"})).json())[1]
    assert inside == ["Resident onboarding: rotas and on-call"]  # a later word may start it
    assert (await (await client.get("/suggest", params={"q": "otas"})).json())[1] == []
    word = (await (await client.get("/suggest", params={"q": "resident onb"})).json())[1]
    assert word == ["Resident onboarding: rotas and on-call"]
    assert len(sim.log) == calls  # never upstream
    assert (await client.get("/suggest", params={"q": "x" * 300})).status == 400


async def test_past_queries_are_suggested_once_enough_callers_made_them(aiohttp_client, sim, clock) -> None:
    config = make_config(sim, server={"trusted_proxies": ["127.0.0.1"]})
    client = await aiohttp_client(create_app(config, clock=clock))

    async def completions() -> list[str]:
        return (await (await client.get("/suggest", params={"q": "onb"})).json())[1]

    for n, spelling in enumerate(("onboarding", "Onboarding", "ONBOARDING")):
        assert "onboarding" not in await completions()
        await client.get("/search.atom", params={"q": spelling}, headers={"X-Forwarded-For": f"192.0.2.{n}"})
    assert "onboarding" in await completions()  # three different callers asked
    await client.get("/search.atom", params={"q": "onBoarding"}, headers={"X-Forwarded-For": "192.0.2.0"})
    clock.advance(31 * 86_400)  # suggest.retention: 30 days after it was last asked
    assert "onboarding" not in await completions()
    assert "Onboarding for managers: approving leave" in await completions()  # titles stay


async def test_page_is_safe_to_embed_and_escapes_upstream_text(aiohttp_client, sim) -> None:
    extra = '[web]\nframe_ancestors = ["\'self\'", "https://intranet.example.edu"]\n'
    client = await aiohttp_client(create_app(make_config(sim, extra=extra)))
    hostile = sim.org("hr").videos[0]
    hostile.title = 'Onboarding <script>alert("x")</script><img src=x onerror=alert(1)>'
    hostile.description = '<iframe src="https://evil.example"></iframe><b onclick="x()">bold</b>'
    resp = await client.get("/embed", params={"q": "onboarding", "org": "hr"})
    html = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://intranet.example.edu" in csp
    # No script runs but our one file, which keeps the frame usable in a sandbox.
    assert "default-src 'none'" in csp and "script-src http://videos.test/static/embed.js;" in csp
    elements = Elements()
    elements.feed(html)
    assert elements.scripts == ["http://videos.test/static/embed.js"] and "iframe" not in elements.tags
    assert not [a for a in elements.attributes if a.startswith("on")]
    shown = html.replace("<mark>", "").replace("</mark>", "")  # the query's words are marked
    assert "Onboarding &lt;script&gt;" in shown  # shown as text
    assert '<base target="_top">' in html and 'target="_self"' in html
    assert 'name="embed" value="1"' in html
    full = await client.get("/", params={"q": "onboarding", "org": "hr"})
    assert '<base target="_top">' not in await full.text() and "<script" not in await full.text()
    assert "script-src" not in full.headers["Content-Security-Policy"]  # the full page runs none


async def test_page_states(client, sim) -> None:
    start = await client.get("/")
    assert start.status == 200 and 'role="search"' in await start.text()
    none = await (await client.get("/", params={"q": "zzzz-nothing"})).text()
    assert "No videos match “zzzz-nothing”" in none
    for org in sim.orgs:
        org.fault = "500"
    down = await (await client.get("/", params={"q": "failing"})).text()
    assert "<strong>Engineering</strong>: failed, its results are missing" in down


@pytest.mark.parametrize(
    "query",
    [
        "q=onboarding&count={count}&startIndex={startIndex?}",
        "q=onboarding&count={itemsPerPage}&startPage={startPage?}&sort={sort?}",
        "q=onboarding&count=%7Bopensearch%3Acount%3F%7D&org={org?}",
    ],
)
async def test_unsubstituted_opensearch_tokens_count_as_absent(client, query) -> None:
    """SharePoint and other clients send template parameters they have nothing for literally."""
    for path in ("/search.atom", "/search.rss", "/search.json", "/"):
        resp = await client.get(f"{path}?{query}")
        assert resp.status == 200, (path, query)
    doc = etree.fromstring(await (await client.get(f"/search.atom?{query}")).read())
    assert doc.findtext(f"{{{OS}}}itemsPerPage") == "20" and doc.findtext(f"{{{OS}}}startIndex") == "1"
    assert (await client.get("/search.atom?q={searchTerms}")).status == 400  # q is still required


async def test_description_urls_carry_no_method_and_the_connector_an_example(client) -> None:
    description = etree.fromstring(await (await client.get("/opensearch.xml")).read())
    assert all("method" not in url.attrib for url in description.findall(f"{{{OS}}}Url"))
    osdx = etree.fromstring(await (await client.get("/search.osdx")).read())
    assert osdx.find(f"{{{OS}}}Query").get("role") == "example"


async def test_durations_where_every_client_looks_and_the_language(aiohttp_client, sim) -> None:
    config = make_config(sim, extra='[description]\nlanguage = "en-GB"\n')
    client = await aiohttp_client(create_app(config))
    q = {"q": "onboarding", "count": "100"}
    _, atom = await get(client, "/search.atom", **q)
    _, rss = await get(client, "/search.rss", **q)
    _, js = await get(client, "/search.json", **q)
    expected = atom_entries(atom)  # Media RSS seconds, by id
    assert etree.fromstring(atom).get("{http://www.w3.org/XML/1998/namespace}lang") == "en-GB"
    channel = etree.fromstring(rss).find("channel")
    assert channel.findtext("language") == "en-GB"
    itunes = "{http://www.itunes.com/dtds/podcast-1.0.dtd}duration"
    assert {i.findtext("guid"): int(i.findtext(itunes)) for i in channel.findall("item")} == expected
    feed = json.loads(js)
    assert feed["language"] == "en-GB"
    for item in feed["items"]:
        [attachment] = item["attachments"]
        assert attachment["mime_type"] == "text/html" and attachment["url"].startswith(
            "https://app.ilosvideos.com/embed/"
        )
        assert attachment["duration_in_seconds"] == expected[item["id"]]
    _, page = await get(client, "/", **q)
    assert b'<html lang="en-GB">' in page
    parsed = feedparser.parse(rss)
    assert all(e.get("itunes_duration") for e in parsed.entries)  # what feedparser-based readers show


async def test_cors_for_feeds_suggestions_and_the_description(client) -> None:
    for path in (
        "/search.atom?q=onboarding",
        "/search.rss?q=onboarding",
        "/search.json?q=onboarding",
        "/suggest?q=onb",
        "/opensearch.xml",
        "/search.atom?q=onboarding&count=0",
    ):
        resp = await client.get(path, headers={"Origin": "https://intranet.example.edu"})
        assert resp.headers["Access-Control-Allow-Origin"] == "*", path
        assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
    page = await client.get("/?q=onboarding", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in page.headers  # the page is for people, not scripts
    preflight = await client.options(
        "/search.atom",
        headers={
            "Origin": "https://intranet.example.edu",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


async def test_cors_for_listed_origins_only(aiohttp_client, sim) -> None:
    config = make_config(sim, extra='[web]\ncors_origins = ["https://intranet.example.edu"]\n')
    client = await aiohttp_client(create_app(config))
    allowed = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Origin": "https://intranet.example.edu"}
    )
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://intranet.example.edu"
    assert "Origin" in allowed.headers["Vary"] and "Accept-Encoding" in allowed.headers["Vary"]
    other = await client.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers and "Origin" in other.headers["Vary"]
    refused = await client.options(
        "/search.json", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_subscriptions_are_newest_first_and_the_url_the_feed_calls_itself(client) -> None:
    page = await (await client.get("/", params={"q": "onboarding", "count": "5"})).text()
    links = re.findall(r'<link rel="alternate" type="([^"]+)" href="([^"]+)"', page)
    alternates = [(t, h) for t, h in links if not t.endswith("+oembed")]  # oEmbed's own, not feeds
    assert {t for t, _ in alternates} == {
        "application/atom+xml",
        "application/rss+xml",
        "application/feed+json",
    }
    for media_type, href in alternates:
        href = href.replace("&amp;", "&")
        assert "sort=date" in href and "count=20" in href
        assert href in page.replace("&amp;", "&").split("Subscribe to this search")[1]  # the same links
        body = await (await client.get(href.replace("http://videos.test", ""))).read()
        if media_type == "application/atom+xml":
            self_href = etree.fromstring(body).find(f"{{{ATOM}}}link[@rel='self']").get("href")
        elif media_type == "application/rss+xml":
            self_href = etree.fromstring(body).find(f"channel/{{{ATOM}}}link[@rel='self']").get("href")
        else:
            self_href = json.loads(body)["feed_url"]
        assert self_href == href  # a reader that follows rel=self keeps the URL it subscribed to
    embed = await (await client.get("/embed", params={"q": "onboarding"})).text()
    assert '<h1 class="visually-hidden">' in embed


@pytest.mark.parametrize(
    "length, low, high", [("short", 0, 239), ("medium", 240, 1200), ("long", 1201, 10**6)]
)
async def test_length_filter_in_every_format(client, sim, length, low, high) -> None:
    from aggregator.demo.simulator import search_catalog

    broken = search_catalog(sim.org("engineering").videos, "lecture")[0].randtag
    sim.org("engineering").broken_durations.add(broken)  # its length cannot be had
    q = {"q": "!", "count": "100", "duration": length}  # "!": everything, as the ilos plugin asked
    _, atom = await get(client, "/search.atom", **q)
    durations = atom_entries(atom)
    assert durations and all(low <= d <= high for d in durations.values())
    feed = etree.fromstring(atom)
    assert "1 video of unknown length left out" in feed.findtext(f"{{{ATOM}}}subtitle")
    self_href = feed.find(f"{{{ATOM}}}link[@rel='self']").get("href")
    assert f"duration={length}" in self_href
    _, rss = await get(client, "/search.rss", **q)
    assert rss_entries(rss) == durations
    _, js = await get(client, "/search.json", **q)
    doc = json.loads(js)
    assert json_entries(js) == durations and doc["_ilos"]["unknown_length_left_out"] == 1
    _, page = await get(client, "/", **q)
    assert b"1 video of unknown length left out." in page


async def test_date_filter_and_bad_filter_values(client) -> None:
    _, js = await get(client, "/search.json", q="!", count="100", after="2022-06-01")
    items = json.loads(js)["items"]
    assert items and all(i["date_published"] >= "2022-06-01" for i in items)
    for params, message in (
        ({"duration": "tiny"}, "duration: must be short"),
        ({"after": "yesterday"}, "after: must be a date, YYYY-MM-DD"),
        ({"after": "2024-02-30"}, "after: must be a date, YYYY-MM-DD"),
    ):
        resp = await client.get("/search.atom", params={"q": "lecture", **params})
        assert resp.status == 400 and message in await resp.text()
