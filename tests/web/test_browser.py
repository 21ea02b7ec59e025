"""The search page in a real browser: Debian's Chromium, driven by Playwright.

Playwright cannot download its own browsers here, so it is pointed at
/usr/bin/chromium (Debian package `chromium`, which .ci/run installs).
Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from aggregator.web.app import create_app
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
    # The cards must carry their durations on the first, cold search. With chromium on the
    # same two cores, 0.3 s of waiting for the lookups was once too short (15 of 20 in a CI
    # run); an answer still goes out as soon as they have landed.
    config = make_config(
        sim, server={"public_url": f"http://127.0.0.1:{port}"}, upstream={"duration_wait": 5.0}
    )
    await aiohttp_server(create_app(config), port=port)
    return f"http://127.0.0.1:{port}"


def errors_from(page, site: str) -> list[str]:
    """The console errors of documents from `site` (ours), as the page logs them."""
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and m.location.get("url", "").startswith(site)
            else None
        ),
    )
    return errors


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
    errors = errors_from(page, site)  # ours only: the stand-in intranet has no favicon, for one
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


# What WordPress does to a discovered provider's oEmbed html (wp_filter_oembed_result in
# wp-includes/embed.php, 6.x): attributes it does not allow are stripped (`hidden`, `style`,
# `loading`), a secret goes on the iframe's src and both elements, the iframe is hidden behind
# the blockquote until the frame speaks, and it is sandboxed with scripts only.
def wordpress_filtered(oembed_html: str, secret: str) -> str:
    quote, frame = re.fullmatch(
        r"(<blockquote[^>]*>.*</blockquote>)(<iframe [^>]*></iframe>)", oembed_html
    ).groups()
    quote = quote.replace(
        "<blockquote hidden>", f'<blockquote class="wp-embedded-content" data-secret="{secret}">'
    )
    frame = re.sub(r' (style|loading)="[^"]*"', "", frame)
    frame = re.sub(r' src="([^"]+)"', rf' src="\1#?secret={secret}" data-secret="{secret}"', frame)
    frame = frame.replace(
        "<iframe ",
        '<iframe class="wp-embedded-content" sandbox="allow-scripts" security="restricted"'
        ' style="position: absolute; clip: rect(1px, 1px, 1px, 1px);" ',
    )
    return quote + frame


# The host side of WordPress's embed protocol, written here to the rules of its wp-embed.js: a
# message must carry a frame's secret and come from that frame; any message shows the frame and
# hides the fallback; "height" sizes the frame within 200-1000 px; "link" opens a URL in the whole
# window, only an http(s) one on the frame's own host, and only while the frame has focus.
WORDPRESS_HOST = """
window.addEventListener("message", (e) => {
  const d = e.data;
  if (!d || typeof d.secret !== "string" || /[^a-zA-Z0-9]/.test(d.secret)) return;
  for (const q of document.querySelectorAll(`blockquote[data-secret="${d.secret}"]`)) q.style.display = "none";
  for (const f of document.querySelectorAll(`iframe[data-secret="${d.secret}"]`)) {
    if (e.source !== f.contentWindow) continue;
    f.removeAttribute("style");
    if (d.message === "height") f.height = Math.min(1000, Math.max(200, parseInt(d.value, 10) || 0));
    if (d.message === "link") {
      const to = new URL(d.value), from = new URL(f.getAttribute("src"));
      if (/^https?:$/.test(to.protocol) && to.host === from.host && document.activeElement === f) {
        window.top.location.href = d.value;
      }
    }
  }
});
"""


async def test_a_pasted_url_in_wordpress_searches_within_its_sandbox_and_opens_videos(
    browser, site, sim, artifacts, aiohttp_server
) -> None:
    """WordPress sandboxes a discovered embed (scripts only: no forms, no popups, no top
    navigation). The frame still shows itself at its height, searches within the frame, and
    opens a video in the whole window through WordPress's own host script."""
    import aiohttp

    url = f"{site}/?q=onboarding"
    async with aiohttp.ClientSession() as http, http.get(f"{site}/oembed", params={"url": url}) as resp:
        embed = (await resp.json())["html"]
    secret = "Ab3dE6gH9k"

    async def post(request: web.Request) -> web.Response:
        body = f"<!doctype html><title>A post</title><h1>This week</h1>{wordpress_filtered(embed, secret)}"
        return web.Response(content_type="text/html", text=f"{body}<script>{WORDPRESS_HOST}</script>")

    blog = web.Application()
    blog.router.add_get("/", post)
    wordpress = await aiohttp_server(blog)
    page = await browser.new_page(viewport={"width": 900, "height": 900})
    errors = errors_from(page, site)  # the frame's: the stand-in blog has no favicon
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(str(wordpress.make_url("/")))

    # The frame spoke: shown, the fallback link hidden, sized to its page.
    await page.wait_for_function("!document.querySelector('iframe').hasAttribute('style')")
    assert await page.locator("blockquote").is_hidden()
    await page.wait_for_function("document.querySelector('iframe').height !== '480'")
    assert 200 <= int(await page.locator("iframe").get_attribute("height")) <= 1000
    await page.locator("iframe").content_frame.locator("ol.results img").first.wait_for()
    await page.screenshot(path=str(artifacts / "embed-wordpress.png"))

    # The search box works inside the frame, and the next page still speaks (the secret rode along):
    # a short page shrinks the frame to its height, with nothing left to scroll inside.
    frame = page.frame_locator("iframe")
    await frame.get_by_label("Search videos").fill("zzzznothing")
    await frame.get_by_label("Search videos").press("Enter")
    await frame.locator("p.summary", has_text="No videos match").wait_for()
    inner = next(f for f in page.frames if f.parent_frame is not None)
    await page.wait_for_function("Number(document.querySelector('iframe').height) < 600")
    assert await inner.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
    await frame.get_by_label("Search videos").fill("recorded")
    await frame.get_by_label("Search videos").press("Enter")
    await frame.locator("p.summary", has_text="for “recorded”").wait_for()
    assert "q=recorded" in inner.url and inner.url.endswith(f"#?secret={secret}")
    await frame.get_by_role("link", name="Next →").click()
    await frame.locator("p.summary", has_text="Videos 21–").wait_for()
    assert inner.url.endswith(f"#?secret={secret}")

    # A result opens in the whole window: asked of the host, through our signed redirect.
    video = await frame.locator("ol.results h2 a").first.get_attribute("href")
    # ilos's own page, which this machine cannot reach: the browser is answered for it.
    await page.route(re.compile(r"^https://app\.ilosvideos\.com/"), lambda r: r.fulfill(body="ilos"))
    await frame.locator("ol.results h2 a").first.click()
    await page.wait_for_url(video)
    assert errors == []  # no CSP refusal, no sandbox refusal


async def test_a_script_on_another_origin_reads_every_feed_with_a_bearer_token(
    browser, sim, aiohttp_server
) -> None:
    """CORS as a browser enforces it: a preflight for Authorization, then the feeds readable by script."""
    from aggregator.config import parse_config_text
    from tests.conftest import config_toml

    token = "intranet-widget-token-0123456789"
    port = free_port()
    config = parse_config_text(
        config_toml(
            sim,
            server={"public_url": f"http://127.0.0.1:{port}", "signing_secret": "s" * 20},
            extra=f'[[clients]]\nname = "widget"\ntoken = "{token}"\n',
        ),
        environ={},
    )
    await aiohttp_server(create_app(config), port=port)
    service = f"http://127.0.0.1:{port}"

    async def widget_page(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text="<!doctype html><title>widget</title>")

    widget = web.Application()
    widget.router.add_get("/", widget_page)
    other = await aiohttp_server(widget)  # another origin: another port
    page = await browser.new_page()
    await page.goto(str(other.make_url("/")))
    results = await page.evaluate(
        """async ([service, token]) => {
            const out = {};
            for (const path of ["/search.atom", "/search.rss", "/search.json"]) {
                const resp = await fetch(service + path + "?q=onboarding", {headers: {Authorization: "Bearer " + token}});
                out[path] = [resp.status, (await resp.text()).slice(0, 200), resp.headers.get("ETag")];
            }
            return out;
        }""",
        [service, token],
    )
    assert results["/search.atom"][0] == 200 and "<feed" in results["/search.atom"][1]
    assert results["/search.rss"][0] == 200 and "<rss" in results["/search.rss"][1]
    assert results["/search.json"][0] == 200 and "jsonfeed.org" in results["/search.json"][1]
    assert all(etag for _, _, etag in results.values())  # exposed to the script


AXE = Path(__file__).resolve().parents[2] / ".ci" / "npm" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.mark.skipif(
    not AXE.exists(), reason="axe-core is not installed (.ci/run: npm install --prefix .ci/npm axe-core)"
)
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/?q=onboarding",
        "/embed?q=onboarding",
        "/?q=zzzz+nothing",
        "/?q=a&count=0",
        "/?q=lecture&duration=long&org=engineering&after=2020-01-01",
    ],
)
async def test_axe_finds_no_accessibility_violations(browser, site, path) -> None:
    # Our CSP allows no script at all; the test lifts it to inject axe, which the page never runs.
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await page.goto(site + path)
    await page.add_script_tag(path=str(AXE))
    violations = await page.evaluate(
        "async () => (await axe.run(document)).violations.map(v => v.id + ': ' + v.help)"
    )
    await context.close()
    assert violations == []


async def test_status_page_renders(browser, site, artifacts) -> None:
    page = await browser.new_page(viewport={"width": 1100, "height": 600})
    await page.goto(site + "/?q=onboarding")
    await page.goto(site + "/status")
    rows = page.locator("tbody tr")
    assert await rows.count() == 3
    assert "closed" in await rows.first.inner_text()
    await page.screenshot(path=str(artifacts / "status-page.png"), full_page=True)


async def test_facets_refine_and_chips_remove_on_a_phone_and_in_the_frame(browser, site, artifacts) -> None:
    page = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    await page.goto(site + "/?q=lecture")
    facets = page.get_by_role("navigation", name="Refine these results")
    medium = facets.get_by_role("link", name=re.compile(r"^Medium \d+$"))
    count = int((await medium.inner_text()).split()[-1])
    await medium.click()
    await page.wait_for_selector("ul.chips")
    summary = await page.locator("p.summary").inner_text()
    assert f"of {count} for" in summary  # the facet's count is the filtered total
    assert await page.locator("ol.results .duration").count() == min(count, 20)
    engineering = facets.get_by_role("link", name=re.compile(r"^Engineering \d+$"))
    await engineering.click()
    chips = page.get_by_role("list", name="Active filters")
    assert await chips.get_by_role("link").count() == 2
    # Nothing scrolls sideways on a phone.
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.screenshot(path=str(artifacts / "facets-phone.png"), full_page=True)
    await chips.get_by_role("link", name=re.compile(r"^Medium \(remove this filter")).click()
    await page.wait_for_url(re.compile("org=engineering"))
    assert "duration=" not in page.url and "org=engineering" in page.url

    frame = await browser.new_page(viewport={"width": 480, "height": 700})
    await frame.goto(site + "/embed?q=lecture")
    assert await frame.get_by_role("navigation", name="Refine these results").count() == 1
    assert await frame.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await frame.screenshot(path=str(artifacts / "facets-embed.png"), full_page=True)
