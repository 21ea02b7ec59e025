"""Property tests: whatever a client sends or an upstream answers, no 5xx, no traceback, no secret.

Hypothesis generates query strings, request headers and upstream documents
(RSS and Atom with hostile titles, numbers, nesting and sizes). The service
and a hostile upstream run for real on loopback, in an event loop of their
own in a background thread; each example is real HTTP. Runs are deterministic
(`derandomize=True`) with a fixed example budget, and nothing is asserted on time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape, quoteattr

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import parse_config_text
from aggregator.web.app import create_app
from tests.conftest import free_port

KEY = "org-key-never-to-be-seen-0001"
TOKEN = "client-token-never-logged-0002"
SECRET = "signing-secret-never-shown-0003"
SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


class Upstream:
    """A hostile ilos: answers whatever body the current example set."""

    def __init__(self) -> None:
        self.search_body = b"<rss version='2.0'><channel/></rss>"
        self.metadata_body = b'{"level":"success","data":{"totalMs":1000}}'

    async def search(self, request: web.Request) -> web.Response:
        return web.Response(body=self.search_body, content_type="application/rss+xml")

    async def metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metadata_body, content_type="application/json")


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, Upstream, Captured]]:
    upstream = Upstream()
    captured = Captured()
    captured.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(captured)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    ports = [free_port(), free_port()]

    async def main() -> None:
        up = web.Application()
        up.router.add_get("/opensearch/", upstream.search)
        up.router.add_post("/video/metadata", upstream.metadata)
        up_runner = web.AppRunner(up, access_log=None)
        await up_runner.setup()
        await web.TCPSite(up_runner, "127.0.0.1", ports[0]).start()
        config = parse_config_text(
            f'[server]\npublic_url = "http://videos.test"\nparse_workers = 0\nsigning_secret = "{SECRET}"\n'
            f'[upstream]\nbase_url = "http://127.0.0.1:{ports[0]}"\ntimeout = 2.0\nrate_limit = 1000000\n'
            f'[[orgs]]\nid = "a"\nname = "A"\napi_key = "{KEY}"\n'
            f'[[orgs]]\nid = "b"\nname = "B"\napi_key = "{KEY}-b"\n'
            f'[[clients]]\nname = "c"\ntoken = "{TOKEN}"\n',
            environ={},
        )
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", ports[1]).start()
        ready.set()
        await stop.wait()
        await runner.cleanup()
        await up_runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{ports[1]}", upstream, captured
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)
    logging.getLogger().removeHandler(captured)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read(), str(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), str(exc.headers)


def assert_clean(status: int, body: bytes, headers: str, captured: Captured) -> None:
    assert status < 500, body[:300]
    text = body.decode("utf-8", "replace") + headers + "\n".join(captured.lines)
    for secret in (KEY, TOKEN, SECRET):
        assert secret not in text
    assert "Traceback" not in text
    captured.lines.clear()


PATHS = ["/search.atom", "/search.rss", "/search.json", "/", "/embed", "/suggest"]
NAMES = ["q", "count", "startIndex", "startPage", "org", "sort", "key", "embed", "k%65y", "", "q[]"]
counter = itertools.count()


@SETTINGS
@given(
    path=st.sampled_from(PATHS),
    pairs=st.lists(
        st.tuples(st.sampled_from(NAMES) | st.text(max_size=8), st.text(max_size=300)), max_size=6
    ),
    raw=st.text(alphabet="%&=;+?#abcq0123456789ABCDEF\\ ", max_size=40),
)
def test_no_query_string_causes_a_5xx(service, path: str, pairs: list[tuple[str, str]], raw: str) -> None:
    base, _, captured = service
    query = urlencode(pairs) + "&" + quote(raw, safe="%&=;+")
    status, body, headers = fetch(f"{base}{path}?{query}", {"Authorization": f"Bearer {TOKEN}"})
    assert_clean(status, body, headers, captured)


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


@SETTINGS
@given(
    path=st.sampled_from(PATHS),
    authorization=st.sampled_from(["", f"Bearer {TOKEN}", "Basic "]) | HEADER_TEXT,
    accept_encoding=HEADER_TEXT,
    if_none_match=HEADER_TEXT,
    if_modified_since=HEADER_TEXT,
    forwarded=HEADER_TEXT,
    request_id=HEADER_TEXT,
)
def test_no_header_causes_a_5xx(
    service,
    path: str,
    authorization: str,
    accept_encoding: str,
    if_none_match: str,
    if_modified_since: str,
    forwarded: str,
    request_id: str,
) -> None:
    base, _, captured = service
    headers = {
        "Authorization": authorization,
        "Accept-Encoding": accept_encoding,
        "If-None-Match": if_none_match,
        "If-Modified-Since": if_modified_since,
        "X-Forwarded-For": forwarded,
        "X-Request-Id": request_id,
    }
    status, body, response_headers = fetch(
        f"{base}{path}?q=onboarding", {k: v for k, v in headers.items() if v}
    )
    assert_clean(status, body, response_headers, captured)


HOSTILE_TEXT = st.text(max_size=400) | st.sampled_from(
    ["\x00\x01\uffff\ufffe", "<script>alert(1)</script>", "&amp;amp;&#0;&#xFFFF;", "]]>", "ilos: VidGrid: x"]
)
NUMBERS = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats().map(str),
    st.text(max_size=40),
    st.just("9" * 4299),
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """RSS or Atom, mostly well-formed, with hostile text, numbers, nesting and sizes."""
    items = []
    for n in range(draw(st.integers(0, 30))):
        tag = f"R{n:011d}"
        title = escape(draw(HOSTILE_TEXT)) if draw(st.booleans()) else draw(HOSTILE_TEXT)
        nesting = draw(st.integers(0, 50))
        duration = draw(NUMBERS)
        if draw(st.booleans()):
            items.append(
                f"<item><title>{title}</title><link>https://app.ilosvideos.com/view/{tag}</link>"
                f"<description>{escape(draw(HOSTILE_TEXT))}</description>"
                f"<pubDate>{escape(draw(st.text(max_size=40)))}</pubDate><duration>{escape(duration)}</duration>"
                f"<author>{escape(draw(HOSTILE_TEXT))}</author>"
                f"<media:content medium='video' duration={quoteattr(duration)} url='https://x/{tag}'/>"
                + "<x>" * nesting
                + "</x>" * nesting
                + "</item>"
            )
        else:
            items.append(
                f"<entry><id>tag:x,2017:video/{tag}</id><title type='html'>{title}</title>"
                f"<link href='https://app.ilosvideos.com/view/{tag}'/><updated>{escape(draw(st.text(max_size=30)))}"
                f"</updated><summary type='html'>{escape(draw(HOSTILE_TEXT))}</summary></entry>"
            )
    body = "".join(items)
    if draw(st.booleans()):
        doc = f"<rss version='2.0' xmlns:media='http://search.yahoo.com/mrss/'><channel><title>t</title>{body}</channel></rss>"
    else:
        doc = f"<feed xmlns='http://www.w3.org/2005/Atom' xmlns:media='http://search.yahoo.com/mrss/'>{body}</feed>"
    data = doc.encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


@SETTINGS
@given(
    document=documents(),
    metadata=st.sampled_from(
        [
            b'{"level":"success","data":{"totalMs":-5}}',
            b'{"level":"success","data":{"hours":"' + b"9" * 4299 + b'"}}',
            b"not json",
            b'{"level":"success","data":{"totalMs":1e308}}',
            b'{"level":"success","data":{"totalMs":910380}}',
        ]
    ),
)
def test_no_upstream_answer_causes_a_5xx(service, document: bytes, metadata: bytes) -> None:
    base, upstream, captured = service
    upstream.search_body, upstream.metadata_body = document, metadata
    q = f"fresh{next(counter)}"  # a new query each time: the answer is fetched, not cached
    for path in ("/search.atom", "/search.rss", "/search.json", "/"):
        status, body, headers = fetch(f"{base}{path}?q={q}&count=100", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert_clean(status, body, headers, captured)
