"""Client tokens: Bearer, Basic (SharePoint) and key= (feed readers); each client sees only its orgs."""

from __future__ import annotations

import base64
import json
import re

import pytest

from aggregator.web.accesslog import redact
from aggregator.web.app import create_app
from tests.helpers import assert_valid_atom, link

SP_TOKEN = "sharepoint-token-0123456789"
HR_TOKEN = "hr-only-token-abcdefghijkl"
SECRET = "signing-secret-for-tests-0123"
CLIENTS = (
    f'[[clients]]\nname = "sharepoint"\ntoken = "{SP_TOKEN}"\n'
    f'[[clients]]\nname = "hr-intranet"\ntoken = "env:HR_TOKEN"\norgs = ["hr"]\n'
)


@pytest.fixture
async def secured(aiohttp_client, sim):
    from aggregator.config import parse_config_text
    from tests.conftest import config_toml

    config = parse_config_text(
        config_toml(sim, server={"signing_secret": SECRET}, extra=CLIENTS), environ={"HR_TOKEN": HR_TOKEN}
    )
    return await aiohttp_client(create_app(config))


def basic(token: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


@pytest.mark.parametrize("path", ["/search.atom", "/search.rss", "/search.json", "/", "/suggest"])
async def test_searches_need_a_token(secured, sim, path) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-xxxxxxxxxx"},
        basic("wrong"),
        {"Authorization": "Basic !!!"},
    ):
        resp = await secured.get(path, params={"q": "onboarding"}, headers=headers)
        assert resp.status == 401
        assert resp.headers.getall("WWW-Authenticate") == [
            'Basic realm="ilos-aggregator", charset="UTF-8"',
            'Bearer realm="ilos-aggregator"',
        ]
        assert resp.headers["Cache-Control"] == "no-store"
    assert sim.calls(endpoint="search") == []


async def test_open_endpoints_stay_open(secured) -> None:
    for path in ("/opensearch.xml", "/healthz", "/readyz", "/icon-16.png", "/static/search.css"):
        assert (await secured.get(path)).status == 200, path


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {SP_TOKEN}"}, basic(SP_TOKEN), basic(SP_TOKEN, user="")]
)
async def test_bearer_and_basic(secured, headers) -> None:
    resp = await secured.get("/search.rss", params={"q": "onboarding"}, headers=headers)
    assert resp.status == 200
    assert resp.headers["Cache-Control"].startswith("private, max-age=")
    assert "Authorization" in resp.headers["Vary"]
    body = await resp.read()
    assert SP_TOKEN.encode() not in body  # header tokens are not copied into links


async def test_key_param_is_kept_in_every_link(secured) -> None:
    resp = await secured.get("/search.atom", params={"q": "onboarding", "count": "3", "key": SP_TOKEN})
    assert resp.status == 200
    doc = assert_valid_atom(await resp.read())
    for rel in ("self", "next", "first", "last", "alternate"):
        assert f"key={SP_TOKEN}" in link(doc, rel), rel
    nxt = await secured.get(link(doc, "next").replace("http://videos.test", ""))
    assert nxt.status == 200


async def test_a_page_opened_with_key_keeps_it_in_its_search_form(secured) -> None:
    """The page's links kept key=, but its form dropped it: the next search was a 401."""
    page = await (await secured.get("/", params={"q": "onboarding", "key": SP_TOKEN})).text()
    form = page[page.index("<form") : page.index("</form>")]
    assert f'<input type="hidden" name="key" value="{SP_TOKEN}">' in form
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form))
    again = await secured.get("/", params={"q": "induction", **fields})  # what the form submits
    assert again.status == 200


async def test_a_client_never_sees_other_orgs(secured, sim) -> None:
    auth = {"Authorization": f"Bearer {HR_TOKEN}"}
    resp = await secured.get("/search.json", params={"q": "onboarding", "count": "100"}, headers=auth)
    feed = json.loads(await resp.read())
    assert {o for item in feed["items"] for o in item["_ilos"]["orgs"]} == {"hr"}
    assert resp.headers["Server-Timing"].count("org-") == 1 and "org-hr;" in resp.headers["Server-Timing"]
    assert sim.calls("engineering", "search") == [] and sim.calls("medicine", "search") == []
    hidden = await secured.get("/search.json", params={"q": "onboarding", "org": "medicine"}, headers=auth)
    assert hidden.status == 400 and (await hidden.json())["parameter"] == "org"
    # The full client's search fills the suggestions; the HR client is offered only HR's titles.
    await secured.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Authorization": f"Bearer {SP_TOKEN}"}
    )
    everyone = (
        await (
            await secured.get(
                "/suggest", params={"q": "resident"}, headers={"Authorization": f"Bearer {SP_TOKEN}"}
            )
        ).json()
    )[1]
    hr_only = (await (await secured.get("/suggest", params={"q": "resident"}, headers=auth)).json())[1]
    assert everyone == ["Resident onboarding: rotas and on-call"] and hr_only == []


async def test_one_page_cache_entry_per_client(secured) -> None:
    full = await secured.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Authorization": f"Bearer {SP_TOKEN}"}
    )
    hr = await secured.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Authorization": f"Bearer {HR_TOKEN}"}
    )
    assert full.headers["ETag"] != hr.headers["ETag"]


def test_tokens_are_redacted_from_the_access_log() -> None:
    assert redact(f"/search.atom?q=x&key={SP_TOKEN}&count=3") == "/search.atom?q=x&key=REDACTED&count=3"
    assert redact(f"/search.atom?KEY={SP_TOKEN}") == "/search.atom?KEY=REDACTED"
    assert redact("/search.atom?q=monkey") == "/search.atom?q=monkey"


async def test_pages_are_shared_by_scope_never_across_it(secured) -> None:
    """The full client's page for a URL must never reach a scoped client asking the same URL."""
    full = {"Authorization": f"Bearer {SP_TOKEN}"}
    hr = {"Authorization": f"Bearer {HR_TOKEN}"}
    wide = json.loads(await (await secured.get("/search.json?q=onboarding", headers=full)).read())
    narrow = json.loads(await (await secured.get("/search.json?q=onboarding", headers=hr)).read())
    assert {o for i in wide["items"] for o in i["_ilos"]["orgs"]} == {"engineering", "medicine", "hr"}
    assert {o for i in narrow["items"] for o in i["_ilos"]["orgs"]} == {"hr"}
    # A page whose links carry one caller's key= is that caller's alone.
    mine = await (await secured.get(f"/search.atom?q=onboarding&key={SP_TOKEN}")).read()
    assert SP_TOKEN.encode() in mine
    theirs = await (await secured.get(f"/search.atom?q=onboarding&key={HR_TOKEN}")).read()
    assert SP_TOKEN.encode() not in theirs and HR_TOKEN.encode() in theirs


async def test_thumbnails_are_signed_for_a_scope(secured, sim) -> None:
    from aggregator.demo.simulator import search_catalog

    hr = {"Authorization": f"Bearer {HR_TOKEN}"}
    full = {"Authorization": f"Bearer {SP_TOKEN}"}
    await secured.get("/search.atom", params={"q": "onboarding"}, headers=full)  # every org's records exist
    feed = json.loads(
        await (await secured.get("/search.json", params={"q": "onboarding"}, headers=hr)).read()
    )
    image = feed["items"][0]["image"]
    assert "orgs=hr&sig=" in image
    path = image.replace("http://videos.test", "")
    assert (await secured.get(path, allow_redirects=False)).status == 302  # no token needed: feed readers
    medicine_only = next(
        v.randtag
        for v in search_catalog(sim.org("medicine").videos, "onboarding")
        if v.randtag not in {v.randtag for v in sim.org("hr").videos}
    )
    query = path.split("?", 1)[1]
    other = await secured.get(f"/thumbnails/{medicine_only}?{query}", allow_redirects=False)
    assert other.status == 404  # the hr scope never showed this medicine video
    tampered = await secured.get(
        f"/thumbnails/{medicine_only}?{query.replace('orgs=hr', 'orgs=medicine')}", allow_redirects=False
    )
    assert tampered.status == 404
    unsigned = await secured.get(f"/thumbnails/{medicine_only}", allow_redirects=False)
    assert unsigned.status == 404


@pytest.mark.parametrize(
    "query",
    [
        f"k%65y={SP_TOKEN}",
        f"%6b%65%79={SP_TOKEN}&q=x",
        f"q=x;token={SP_TOKEN}",
        f"api%5Fkey={SP_TOKEN}",
        f"q=x&key+={SP_TOKEN}",
    ],
)
def test_tokens_are_redacted_however_the_name_is_escaped(query) -> None:
    assert SP_TOKEN not in redact(f"/search.atom?{query}")


async def test_status_page_for_operators(secured, sim) -> None:
    full = {"Authorization": f"Bearer {SP_TOKEN}"}
    sim.org("medicine").fault = "503"
    await secured.get("/search.atom", params={"q": "onboarding"}, headers=full)
    assert (await secured.get("/status")).status == 401
    assert (await secured.get("/status", headers={"Authorization": f"Bearer {HR_TOKEN}"})).status == 403
    resp = await secured.get("/status", headers=full)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    html = await resp.text()
    for name in ("Engineering", "Medicine", "Human Resources"):
        assert name in html
    assert "error: HTTP 503" in html and "of 60" in html
    for secret in (SP_TOKEN, HR_TOKEN, SECRET, "sim-key-"):
        assert secret not in html


async def test_metrics_can_sit_behind_a_token(aiohttp_client, sim) -> None:
    from aggregator.config import parse_config_text
    from tests.conftest import config_toml

    metrics_token = "prometheus-scrape-token-0123"
    config = parse_config_text(config_toml(sim, server={"metrics_token": metrics_token}), environ={})
    client = await aiohttp_client(create_app(config))
    refused = await client.get("/metrics")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})).status == 200
    # The scheme is case-insensitive (RFC 9110 11.1); a bare token is not a Bearer token.
    assert (await client.get("/metrics", headers={"Authorization": f"bearer {metrics_token}"})).status == 200
    assert (await client.get("/metrics", headers={"Authorization": f"BEARER  {metrics_token}"})).status == 200
    assert (await client.get("/metrics", headers={"Authorization": metrics_token})).status == 401
    assert (await client.get("/metrics", headers={"Authorization": f"Basic {metrics_token}"})).status == 401


async def test_readyz_says_what_is_degraded_in_general_terms_and_names_orgs_only_to_whom_status_would(
    secured, sim
) -> None:
    """Before, /readyz listed every org id, its breaker, budget and deferred lookups to anyone,
    while /status refused the same to a limited client."""
    sim.org("medicine").fault = "500"
    await secured.get(
        "/search.atom", params={"q": "onboarding"}, headers={"Authorization": f"Bearer {SP_TOKEN}"}
    )
    for headers in ({}, {"Authorization": f"Bearer {HR_TOKEN}"}):
        resp = await secured.get("/readyz", headers=headers)
        assert resp.status == 200  # probes keep their meaning: the process can serve
        body = await resp.json()
        assert body["status"] == "degraded" and body["degraded"] == ["1 of 3 organisations unavailable"]
        assert "orgs" not in body and "medicine" not in await resp.text()
    full = await (await secured.get("/readyz", headers={"Authorization": f"Bearer {SP_TOKEN}"})).json()
    assert full["orgs"]["medicine"]["last"] == "error" and "org medicine: error" in full["degraded"]
