"""Every format the service answers in, in one registry.

The routes (web), the OpenSearch description's `Url` templates
(description), paging and self links (presentation) and the page's feed
links all loop over `FORMATS`. Adding a search format is one entry here and
one renderer `View -> bytes` (a coroutine: big pages are written in turns).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType

from aggregator.render.atom import render_atom
from aggregator.render.jsonfeed import render_json_feed
from aggregator.render.page import render_page
from aggregator.render.presentation import View
from aggregator.render.rss import render_rss


@dataclass(frozen=True, slots=True)
class Format:
    name: str  # in View.url, page-cache keys and metric labels
    path: str
    media_type: str
    title: str  # what people see it called
    # View -> body, written in turns of the loop; None for the formats that are not a page of
    # results (their own handlers)
    render: Callable[[View], Awaitable[bytes]] | None
    rel: str = "results"  # the OpenSearch `Url` rel: results, suggestions, or self
    paged: bool = True  # its template carries count and startIndex
    subscribable: bool = True  # offered as a feed: rel=alternate and the page's subscribe links
    cors: bool = False  # readable by scripts on other origins

    @property
    def content_type(self) -> str:
        """The Content-Type header; JSON Feed's media type implies UTF-8 and takes no charset."""
        if self.media_type.endswith("json"):
            return self.media_type
        return f"{self.media_type}; charset=utf-8"


HTML = Format("html", "/", "text/html", "Search page", render_page, subscribable=False)
ATOM = Format("atom", "/search.atom", "application/atom+xml", "Atom", render_atom, cors=True)
RSS = Format("rss", "/search.rss", "application/rss+xml", "RSS", render_rss, cors=True)
JSON_FEED = Format("json", "/search.json", "application/feed+json", "JSON Feed", render_json_feed, cors=True)
SUGGESTIONS = Format(
    "suggest",
    "/suggest",
    "application/x-suggestions+json",
    "Suggestions",
    None,
    rel="suggestions",
    paged=False,
    subscribable=False,
    cors=True,
)
DESCRIPTION = Format(
    "description",
    "/opensearch.xml",
    "application/opensearchdescription+xml",
    "OpenSearch description",
    None,
    rel="self",
    paged=False,
    subscribable=False,
    cors=True,
)

FORMATS: tuple[Format, ...] = (HTML, ATOM, RSS, JSON_FEED, SUGGESTIONS, DESCRIPTION)
BY_NAME = MappingProxyType({f.name: f for f in FORMATS})
