"""The description, Windows connector, stylesheet, script, icons and suggestions (web.assets):
strong validators per content coding, 304s, and gzip for the text ones where the client accepts
it; and the framed page's signed result links."""

from __future__ import annotations

import gzip
import re
from html import unescape

import pytest


@pytest.mark.parametrize(
    ("path", "gzipped"),
    [
        ("/opensearch.xml", True),
        ("/search.osdx", True),
        ("/static/search.css", True),
        ("/static/embed.js", True),
        ("/icon-64.png", False),  # already compressed: validators only
    ],
)
async def test_every_resource_answers_304_to_its_own_etag_and_is_gzipped_where_it_helps(
    client, path: str, gzipped: bool
) -> None:
    """They carried no validator and were never gzipped: clients fetched them whole every time."""
    plain = await client.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    etag = plain.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    body = await plain.read()
    again = await client.get(path, headers={"Accept-Encoding": "identity", "If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag and await again.read() == b""
    packed = await client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    if gzipped:
        assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["ETag"] == etag[:-1] + '-gzip"'
        assert gzip.decompress(await packed.read()) == body
        assert "Accept-Encoding" in packed.headers["Vary"]
        same = await client.get(
            path, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]}
        )
        assert same.status == 304
    else:
        assert "Content-Encoding" not in packed.headers and packed.headers["ETag"] == etag


async def test_the_windows_connector_is_still_an_attachment(client) -> None:
    resp = await client.get("/search.osdx")
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")


async def test_suggestions_carry_a_strong_etag_and_answer_304(client) -> None:
    await client.get("/search.atom", params={"q": "onboarding"})
    first = await client.get("/suggest", params={"q": "onb"})
    assert first.status == 200 and (await first.json())[0] == "onb"
    again = await client.get(
        "/suggest", params={"q": "onb"}, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status == 304
    assert "Authorization" in again.headers["Vary"]


async def test_json_feed_names_the_author_for_1_0_readers_too(client) -> None:
    feed = await (await client.get("/search.json", params={"q": "onboarding"})).json()
    with_author = [item for item in feed["items"] if "authors" in item]
    assert with_author and all(item["author"] == item["authors"][0] for item in with_author)


async def test_the_status_page_links_back_to_the_search_page(client) -> None:
    page = await (await client.get("/status")).text()
    assert '<a href="http://videos.test/">Search page</a>' in page


def test_the_stylesheet_uses_no_property_the_html_checker_flags() -> None:
    from aggregator.render.page import STYLESHEET

    css = STYLESHEET.decode()
    assert " line-clamp" not in css.replace("-webkit-line-clamp", "")


async def test_a_framed_pages_results_lead_out_through_a_signed_redirect_and_nothing_else_does(
    client, sim
) -> None:
    """Inside WordPress's sandbox a link may leave the frame only through the frame's own host:
    each result of /embed names a redirect of ours, which leads where the page pointed and
    nowhere an outsider chooses."""
    embed = await (await client.get("/embed", params={"q": "onboarding"})).text()
    pairs = re.findall(r'<h2><a href="([^"]+)" data-link="([^"]+)">', embed)
    assert len(pairs) >= 3
    for upstream, ours in pairs[:3]:
        assert unescape(ours).startswith("http://videos.test/link?to=")
        path = unescape(ours).removeprefix("http://videos.test")
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == unescape(upstream)
        assert "/view/" in unescape(upstream)
    path = unescape(pairs[0][1]).removeprefix("http://videos.test")
    elsewhere = path.replace("to=http", "to=https%3A%2F%2Fevil.example%2F%3Fx%3Dhttp")
    forged = re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 32, path)
    for bad in (elsewhere, forged, "/link?to=javascript:alert(1)&sig=00", "/link", "/link?to=%0d%0a"):
        resp = await client.get(bad, allow_redirects=False)
        assert resp.status == 404 and "Location" not in resp.headers, bad
    full = await (await client.get("/", params={"q": "onboarding"})).text()
    assert "data-link=" not in full and "<script" not in full  # the full page is as it was


async def test_only_the_compact_page_may_run_a_script_and_only_ours(client) -> None:
    embed = await client.get("/embed", params={"q": "onboarding"})
    policy = embed.headers["Content-Security-Policy"]
    assert "script-src http://videos.test/static/embed.js;" in policy and "default-src 'none'" in policy
    assert '<script src="http://videos.test/static/embed.js" defer></script>' in await embed.text()
    for path in ("/?q=onboarding", "/", "/status"):
        resp = await client.get(path)
        assert "script-src" not in resp.headers["Content-Security-Policy"], path
