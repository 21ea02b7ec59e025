"""The search page in a real browser: Debian's Chromium, driven by Playwright.

Playwright cannot download its own browsers here, so it is pointed at
/usr/bin/chromium (Debian package `chromium`, which .ci/run installs).
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from aiohttp import web

from aggregator.web import create_app
from tests.conftest import free_port, make_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)", allow_module_level=True)

async_playwright = pytest.importorskip("playwright.async_api").async_playwright


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@pytest.fixture
async def site(aiohttp_server, sim):
    port = free_port()
    config = make_config(sim, server={"public_url": f"http://127.0.0.1:{port}"})
    await aiohttp_server(create_app(config), port=port)
    return f"http://127.0.0.1:{port}"


async def test_search_cards_and_pager(browser, site, artifacts) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(site + "/")
    await page.get_by_label("Search videos in every organisation").fill("recorded")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_selector("ol.results li")
    cards = page.locator("ol.results > li")
    assert await cards.count() == 20
    badges = await page.locator("ol.results .duration").all_inner_texts()
    assert len(badges) == 20 and all(re.fullmatch(r"(\d+:)?\d{1,2}:\d\d", b) for b in badges)
    # The first cards' thumbnails really load: our stable URL, redirected to the signed image.
    await page.wait_for_function(
        "Array.from(document.querySelectorAll('ol.results img')).slice(0, 3)"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=10_000,
    )
    first_title = await page.locator("ol.results h2 a").first.inner_text()
    summary = await page.locator("p.summary").inner_text()
    total = int(re.search(r"of (\d+)", summary).group(1))
    assert summary.startswith("Videos 1–20 of") and total > 40
    await page.screenshot(path=str(artifacts / "search-page-1.png"), full_page=True)

    await page.get_by_role("link", name="Next →").click()
    await page.wait_for_selector("text=Videos 21–40 of")
    assert await page.locator("ol.results > li").count() == 20
    assert await page.locator("ol.results h2 a").first.inner_text() != first_title
    assert await page.locator("nav.pager").get_by_text("Page 2 of").count() == 1
    await page.screenshot(path=str(artifacts / "search-page-2.png"), full_page=True)
    assert errors == []  # no CSP violations, no failed loads reported by the page


async def test_embedded_page_in_an_iframe(browser, site, artifacts, aiohttp_server) -> None:
    """An intranet page on another origin frames the compact layout (CSP frame-ancestors *)."""

    async def intranet_page(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/html",
            text=(
                f'<!doctype html><h1>Intranet</h1><iframe title="videos" src="{site}/embed?q=onboarding"'
                ' width="800" height="560"></iframe>'
            ),
        )

    intranet = web.Application()
    intranet.router.add_get("/", intranet_page)
    other = await aiohttp_server(intranet)
    page = await browser.new_page(viewport={"width": 900, "height": 700}, color_scheme="dark")
    errors: list[str] = []  # ours only: the stand-in intranet has no favicon, for one
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and m.location.get("url", "").startswith(site)
            else None
        ),
    )
    await page.goto(str(other.make_url("/")))
    frame = page.frame_locator("iframe")
    await frame.locator("ol.results li").first.wait_for()
    assert await frame.locator("ol.results .duration").count() > 0
    target = await frame.locator("ol.results h2 a").first.evaluate(
        "a => a.target || document.querySelector('base').target"
    )
    assert target == "_top"  # videos open in the whole window, not in the frame
    await page.screenshot(path=str(artifacts / "embedded-dark.png"))
    assert errors == []  # framing allowed, nothing blocked by the page's CSP
