"""The feedgen document Atom and RSS are both written from.

`write_feed` writes everything the two formats share: ids, links, entries with
Media RSS durations and thumbnails, categories per org. feedgen writes neither
OpenSearch response elements nor, in RSS, any `atom:link` but `self`;
`OpenSearchExtension` adds both, in the OpenSearch 1.1 namespace
http://a9.com/-/spec/opensearch/1.1/ exactly (SharePoint and Windows federated
search match it literally).
"""

from __future__ import annotations

import functools
from typing import Any

from feedgen.ext.base import BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem
from lxml import etree

from aggregator import PRODUCT, __version__
from aggregator.loop.turns import in_turns
from aggregator.model import Result, duration_seconds
from aggregator.render.presentation import View

OPENSEARCH_NS = "http://a9.com/-/spec/opensearch/1.1/"
ATOM_NS = "http://www.w3.org/2005/Atom"
ILOS_NS = "https://github.com/ilos-aggregator/ns/1.0"  # ours, fixed: what only this service says


class OpenSearchExtension(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    def __init__(self) -> None:
        self._response: dict[str, object] | None = None
        self._rss_links: list[dict[str, str]] = []

    def rss_links(self, links: list[dict[str, str]]) -> None:
        """atom:links for the RSS channel beyond `self` (search and paging)."""
        self._rss_links = links

    def extend_ns(self) -> dict[str, str]:
        return {"opensearch": OPENSEARCH_NS}

    def response(
        self, *, total: int, start_index: int, items_per_page: int, search_terms: str, count: int
    ) -> None:
        self._response = {
            "total": total,
            "start_index": start_index,
            "items_per_page": items_per_page,
            "search_terms": search_terms,
            "count": count,
        }

    def _write(self, parent: etree._Element) -> None:
        r = self._response
        if r is None:
            return
        for name, value in (
            ("totalResults", r["total"]),
            ("startIndex", r["start_index"]),
            ("itemsPerPage", r["items_per_page"]),
        ):
            xml_elem(f"{{{OPENSEARCH_NS}}}{name}", parent).text = str(value)
        xml_elem(
            f"{{{OPENSEARCH_NS}}}Query",
            parent,
            role="request",
            searchTerms=str(r["search_terms"]),
            startIndex=str(r["start_index"]),
            count=str(r["count"]),
        )

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        self._write(feed)
        return feed

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        channel = rss[0]
        for link in self._rss_links:
            xml_elem(f"{{{ATOM_NS}}}link", channel, **link)
        self._write(channel)
        return rss


class MissingExtension(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    """`<ilos:missing org="medicine" status="timeout">Medicine</ilos:missing>` at feed level, one per
    org whose results are missing: what the subtitle says in words, for programs. Registered only
    when some are missing, so a healthy answer's bytes stay as they were."""

    def __init__(self) -> None:
        self._missing: list[tuple[str, str, str]] = []

    def missing(self, missing: list[tuple[str, str, str]]) -> None:
        self._missing = missing

    def extend_ns(self) -> dict[str, str]:
        return {"ilos": ILOS_NS}

    def _write(self, parent: etree._Element) -> None:
        for org_id, name, status in self._missing:
            xml_elem(f"{{{ILOS_NS}}}missing", parent, org=org_id, status=status).text = name

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        self._write(feed)
        return feed

    def extend_rss(self, rss: etree._Element) -> etree._Element:
        self._write(rss[0])
        return rss


class OpenSearchEntryExtension(BaseExtension):  # type: ignore[misc]  # feedgen is untyped
    """Entries carry nothing of OpenSearch; feedgen wants a class all the same."""


async def write_feed(view: View, fmt: str) -> bytes:
    """The Atom (`fmt` "atom") or RSS ("rss") document of a page, written in turns of the loop.

    feedgen takes ~0.15 ms an entry, ~0.4 ms on a slow machine, so a 100-entry
    page written in one go (`atom_str`) held the loop 15-40 ms. Here feedgen
    writes the feed without its entries, then each entry's element on its own
    (`FeedEntry.atom_entry`/`rss_entry`, a few at a time between turns), and
    lxml puts them together and serialises the whole in C: the same bytes.
    """
    fg = _feed(view, fmt)
    head = fg.atom_str() if fmt == "atom" else fg.rss_str()
    root = etree.fromstring(head)
    parent = root if fmt == "atom" else root[0]  # RSS items go in the channel
    parent.extend(await in_turns(view.page.results, functools.partial(_entry, fg, view, fmt)))
    body: bytes = etree.tostring(
        root.getroottree(), pretty_print=True, xml_declaration=True, encoding="UTF-8"
    )
    return body


def _feed(view: View, fmt: str) -> Any:
    """The feed-level parts (a feedgen `FeedGenerator`): Atom and RSS share most of them.

    `fmt` names the format being written: its self and paging URLs and media type.
    """
    page = view.page
    media_type = view.formats[fmt].media_type
    fg = FeedGenerator()
    fg.load_extension("media", atom=True, rss=True)
    fg.load_extension("dc", atom=False, rss=True)
    # itunes:duration: the duration field most readers and podcatchers show (RSS only).
    fg.load_extension("podcast", atom=False, rss=True)
    fg.language(view.language)  # Atom xml:lang, RSS <language>
    fg.register_extension("opensearch", OpenSearchExtension, OpenSearchEntryExtension)
    if view.missing:
        fg.register_extension("ilos", MissingExtension, OpenSearchEntryExtension)
        fg.ilos.missing(view.missing)
    fg.id(view.feed_id)
    fg.title(view.title)
    fg.description(view.subtitle)
    fg.author({"name": PRODUCT})
    fg.generator(PRODUCT, version=__version__)
    fg.updated(view.updated)  # also RSS lastBuildDate, which would otherwise be "now"
    fg.link(href=view.url(fmt), rel="self", type=media_type)
    fg.link(href=view.url("html"), rel="alternate", type="text/html")
    extra_links = [
        {
            "href": view.description_url,
            "rel": "search",
            "type": view.formats["description"].media_type,
            "title": PRODUCT,
        }
    ]
    extra_links += [
        {"href": href, "rel": rel, "type": media_type} for rel, href in view.paging_links(fmt).items()
    ]
    if view.hub:  # WebSub: the topic is the rel="self" above
        extra_links.append({"href": view.hub, "rel": "hub"})
    if fmt == "atom":
        for link in extra_links:
            fg.link(**link)
    else:
        fg.opensearch.rss_links(extra_links)
    fg.opensearch.response(
        total=page.total,
        start_index=page.params.start_index,
        items_per_page=page.params.count,
        search_terms=page.params.q,
        count=page.params.count,
    )
    if fmt == "rss":
        fg.link(href=view.url("html"), rel="alternate", replace=False)
    return fg


def _entry(fg: Any, view: View, fmt: str, result: Result) -> etree._Element:
    """One result's Atom entry or RSS item."""
    v = result.video
    fe = fg.add_entry(order="append")
    fe.id(v.entry_id)  # also the RSS guid, isPermaLink="false"
    fe.title(v.title)
    fe.link(href=v.link, rel="alternate", type="text/html")
    fe.updated(v.published or view.first_seen)
    if v.published:
        fe.published(v.published)  # also the RSS pubDate
    if v.author:
        fe.author({"name": v.author})  # Atom only: RSS <author> must be an e-mail address
        fe.dc.dc_creator(v.author)
    fe.summary(view.summary(result))  # also the RSS description: plain text
    for org_id in result.orgs:
        fe.category(term=org_id, label=view.org_names.get(org_id, org_id))
    media: dict[str, str | None] = {
        "url": v.embed_url,
        "type": "text/html",
        "medium": "video",
        "group": None,
    }
    if v.duration_ms is not None:
        media["duration"] = str(duration_seconds(v.duration_ms))
        fe.podcast.itunes_duration(duration_seconds(v.duration_ms))
    fe.media.content(media)
    thumb = view.thumbnail_url(result)
    if thumb:
        fe.media.thumbnail({"url": thumb, "group": None})
    element: etree._Element = fe.atom_entry() if fmt == "atom" else fe.rss_entry()
    return element
