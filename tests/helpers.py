"""Reading our feeds the way a client would."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from lxml import etree

NS = {
    "a": "http://www.w3.org/2005/Atom",
    "media": "http://search.yahoo.com/mrss/",
    "os": "http://a9.com/-/spec/opensearch/1.1/",
}
ATOM_RNG = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "schemas" / "atom.rng")))


def atom(body: bytes) -> etree._Element:
    return etree.fromstring(body)


def assert_valid_atom(body: bytes) -> etree._Element:
    """RFC 4287's RELAX NG grammar, plus the two rules it states as Schematron."""
    doc = etree.fromstring(body)
    assert ATOM_RNG.validate(doc), ATOM_RNG.error_log
    entries = doc.findall("a:entry", NS)
    assert doc.find("a:author", NS) is not None or all(e.find("a:author", NS) is not None for e in entries)
    for e in entries:
        alternate = [el for el in e.findall("a:link", NS) if el.get("rel", "alternate") == "alternate"]
        assert e.find("a:content", NS) is not None or alternate
    return doc


def entry_ids(doc: etree._Element) -> list[str]:
    return [e.findtext("a:id", namespaces=NS) for e in doc.findall("a:entry", NS)]


def link(doc: etree._Element, rel: str) -> str | None:
    for el in doc.findall("a:link", NS):
        if el.get("rel") == rel:
            return el.get("href")
    return None


def server_timing(resp) -> dict[str, str]:
    """Server-Timing metric name -> its desc (`org-engineering` -> `ok`, `durations` -> `complete`)."""
    out = {}
    for metric in resp.headers["Server-Timing"].split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        desc = next(p for p in params if p.startswith("desc=")).split("=", 1)[1].strip('"')
        out[name] = desc
    return out


ROOT = Path(__file__).resolve().parent.parent


def serve(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m aggregator serve --config CONFIG [ARGS]` as its own process; its stderr is piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", "--config", str(config), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def timing(resp) -> dict[str, str]:
    """org id -> Server-Timing desc (the orgs' metrics only)."""
    return {
        name.removeprefix("org-"): desc
        for name, desc in server_timing(resp).items()
        if name.startswith("org-")
    }


async def wait_until_up(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        await asyncio.sleep(0.1)
