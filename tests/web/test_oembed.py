"""oEmbed 1.0 (web.oembed): a pasted search URL embeds the search, and nothing else is answered."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest
from lxml import etree

PAGE = "http://videos.test/?q=onboarding&org=hr"


async def test_a_search_url_is_a_rich_embed_of_that_search_within_the_bounds(client, sim) -> None:
    calls = len(sim.log)
    resp = await client.get("/oembed", params={"url": PAGE, "maxwidth": "500", "maxheight": "300"})
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["version"] == "1.0" and doc["type"] == "rich"
    assert doc["width"] <= 500 and doc["height"] <= 300
    assert (
        doc["provider_url"] == "http://videos.test/" and doc["cache_age"] > 0 and "onboarding" in doc["title"]
    )
    [src] = re.findall(r'<iframe src="([^"]+)"', doc["html"])
    assert html.unescape(src) == "http://videos.test/embed?q=onboarding&org=hr"
    assert 'loading="lazy"' in doc["html"] and "title=" in doc["html"]
    # WordPress's fallback: a link to the search, hidden from every consumer that is not WordPress.
    [fallback] = re.findall(
        r'^<blockquote hidden><a href="([^"]+)">[^<]+</a></blockquote><iframe ', doc["html"]
    )
    assert html.unescape(fallback) == "http://videos.test/?q=onboarding&org=hr"
    assert "thumbnail_url" not in doc  # the search is not cached here: no thumbnail to offer
    assert len(sim.log) == calls  # oEmbed never starts an upstream search


async def test_a_cached_search_offers_its_first_thumbnail(client, sim) -> None:
    assert (await client.get("/embed", params={"q": "onboarding", "org": "hr"})).status == 200
    calls = len(sim.log)
    doc = await (await client.get("/oembed", params={"url": PAGE})).json()
    assert doc["thumbnail_url"].startswith("http://videos.test/thumbnails/")
    assert (doc["thumbnail_width"], doc["thumbnail_height"]) == (180, 102)  # the spec wants both
    assert len(sim.log) == calls


async def test_micawber_embeds_a_pasted_search_url(client) -> None:
    """micawber (PyPI), an independent consumer, with the provider registered as a site would."""
    import asyncio

    micawber = pytest.importorskip("micawber")
    registry = micawber.ProviderRegistry()
    endpoint = str(client.make_url("/oembed"))
    registry.register(r"http://videos\.test/\S*", micawber.Provider(endpoint))
    text = "This week's videos:\nhttp://videos.test/?q=safety\n"  # on its own line: embedded, not linked
    # micawber fetches with urllib, blocking: in a thread, while the app answers on this loop.
    rendered = await asyncio.to_thread(registry.parse_text, text)
    assert "<iframe" in rendered and "http://videos.test/embed?q=safety" in html.unescape(rendered)
    meta = await asyncio.to_thread(registry.request, "http://videos.test/embed?q=safety")
    assert meta["type"] == "rich" and meta["provider_name"]


async def test_the_xml_form_carries_the_same_fields(client) -> None:
    resp = await client.get("/oembed", params={"url": "http://videos.test/embed?q=safety", "format": "xml"})
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = etree.fromstring(await resp.read())
    assert root.tag == "oembed" and root.findtext("type") == "rich" and root.findtext("version") == "1.0"
    assert "/embed?q=safety" in root.findtext("html")


async def test_what_is_not_a_search_of_this_service_is_refused_as_the_spec_says(client) -> None:
    for url in (
        "http://elsewhere.example/?q=onboarding",  # foreign
        "http://videos.test/search.atom?q=onboarding",  # not the page
        "http://videos.test/?count=5",  # no query
        "javascript:alert(1)",
        "http://[::1",  # unparseable
    ):
        assert (await client.get("/oembed", params={"url": url})).status == 404, url
    assert (await client.get("/oembed", params={"url": PAGE, "format": "yaml"})).status == 501
    keyed = await client.get("/oembed", params={"url": PAGE + "&key=sharepoint-token-0123456789"})
    assert keyed.status == 401 and "sharepoint-token" not in await keyed.text()


async def test_the_page_and_the_embed_say_where_their_oembed_is(client) -> None:
    for path in ("/", "/embed"):
        page = await (await client.get(path, params={"q": "onboarding"})).text()
        [json_link] = re.findall(
            r'<link rel="alternate" type="application/json\+oembed" href="([^"]+)"', page
        )
        assert re.search(
            r'<link rel="alternate" type="text/xml\+oembed" href="http://videos.test/oembed\?', page
        )
        found = await client.get(html.unescape(json_link).replace("http://videos.test", ""))
        assert found.status == 200 and (await found.json())["type"] == "rich"


EXTRACTOR = (
    Path(__file__).resolve().parents[2] / ".ci" / "npm" / "node_modules" / "@extractus" / "oembed-extractor"
)


@pytest.mark.skipif(
    not EXTRACTOR.exists() or shutil.which("node") is None,
    reason="@extractus/oembed-extractor is not installed (.ci/run: npm install --prefix .ci/npm)",
)
async def test_oembed_extractor_discovers_the_embed_from_the_page_url_alone(aiohttp_server, sim) -> None:
    """The npm consumer most Node CMSs use, knowing nothing of us: it reads the page's discovery link."""
    import asyncio
    import json

    from aggregator.web.app import create_app
    from tests.conftest import free_port, make_config

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await aiohttp_server(create_app(make_config(sim, server={"public_url": base})), port=port)
    script = (
        f"import {{ extract }} from {json.dumps((EXTRACTOR / 'esm' / 'mod.js').as_uri())};\n"
        f"console.log(JSON.stringify(await extract({json.dumps(base + '/?q=onboarding&org=hr')})));\n"
    )
    node = await asyncio.create_subprocess_exec(
        "node",
        "--input-type=module",
        "-e",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), 30)
    assert node.returncode == 0, err.decode()
    doc = json.loads(out)
    assert doc["method"] == "auto-discovery" and doc["type"] == "rich"
    assert f"{base}/embed?q=onboarding&amp;org=hr" in doc["html"]
